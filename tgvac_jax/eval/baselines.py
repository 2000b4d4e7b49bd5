"""Non-learned baselines for the ablation (no ground truth, no training): what a learned model must beat.

  visible_only          the visible mask is the answer (and the visible pixels the object): completes nothing
  temporal_propagation  the object of the nearest less-occluded frame, moved by the visible region's translation
                        (`infer/propagate.py`, which inference's `temporal_prior` also uses)

Both take frames (N, H, W, 3) uint8 and visible masks (N, H, W) bool and return (rgb, amodal): the object over
white and its amodal mask, the form the model's completions have.
"""

from tgvac_jax.infer.propagate import temporal_propagation, visible_only

__all__ = ['temporal_propagation', 'visible_only']
