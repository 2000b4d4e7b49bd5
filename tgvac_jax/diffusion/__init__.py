"""Diffusion core: noise schedules, the eq. 2/3 loss, DDIM/DDPM, classifier-free guidance and the §3.4
temporal-diffusion sampler. Numerically diffusers' schedulers; the sampler is one jit program."""

from tgvac_jax.diffusion.ddim import DDIMConfig, ddim_sample, ddim_step
from tgvac_jax.diffusion.ddpm import DDPMConfig, ddpm_sample, ddpm_step
from tgvac_jax.diffusion.guidance import Cond, guided_output
from tgvac_jax.diffusion.losses import diffusion_loss, noisy_input
from tgvac_jax.diffusion.schedule import ScheduleConfig, add_noise, alphas_cumprod, training_target
from tgvac_jax.diffusion.temporal_sampler import (TemporalSamplerConfig, make_temporal_sampler, temporal_sample,
                                                  windowed_model_output)
from tgvac_jax.diffusion.windows import WindowSchedule, window_schedule, window_weights
