"""The autoencoder stage: a small `AutoencoderKL` from scratch (reconstruction + a small KL), for from-scratch
TGVAC models such as the embedded demo's. Real runs use SD-1.5's VAE and skip this stage.

  python run.py --config configs/vae.py --config.data.dataset=data/
  python run.py --config configs/vae.py:tiny
"""

from configs import frame
from tgvac_jax.train.config import base_config


def get_config(arg=None):
  c = base_config()
  c.stage = 'vae'
  c.workdir = 'out/vae'
  c.init.from_scratch = True      # sizes from c.model.vae_channels / latent_channels
  c.data.dataset = 'data'
  c.data.size = 64
  c.num_steps = 50_000
  c.batch_size = 32
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 500
  c.vae_loss.kl_weight = 1e-6
  c.dropout.text = c.dropout.concat = c.dropout.both = 0.0
  c.compute_dtype = 'float32'
  if arg == 'tiny':
    c = frame.tiny(c)
    c.stage = 'vae'
    return c
  if arg:
    raise ValueError(f"configs/vae.py: unknown variant {arg!r} (known: 'tiny')")
  return c
