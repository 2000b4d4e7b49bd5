"""Motion weights in and out: original AnimateDiff checkpoints and diffusers MotionAdapter folders."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

from convert.animatediff import (ANIMATEDIFF_RENAMES, is_animatediff_format, load_motion,  # noqa: E402
                                 load_motion_state, motion_state_dict, save_motion_adapter)
from convert.rules import ConversionError, flat_params  # noqa: E402
from tgvac_jax.models.motion import MotionConfig, MotionParam  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

# the same small UNet as tests/models/test_motion.py (so eager init compiles are shared in one session)
UNET_CFG = dict(block_out_channels=(32, 64), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, cross_attention_dim=24,
                attention_head_dim=(2, 4), norm_num_groups=8, in_channels=12)
ADAPTER_CFG = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                   motion_norm_num_groups=8, motion_max_seq_length=32)
MOTION = MotionConfig(num_attention_heads=4, norm_num_groups=8)


def adapter(seed: int = 0, **overrides):
  torch.manual_seed(seed)
  a = diffusers.MotionAdapter(**{**ADAPTER_CFG, **overrides}).eval()
  with torch.no_grad():
    for p in a.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return a


@pytest.fixture(scope='module')
def video_unet():
  config = dataclasses.replace(UNetConfig.from_dict(UNET_CFG), motion=MOTION)
  return UNet2DConditionModel(config, rngs=nnx.Rngs(0))


def motion_values(model) -> dict[str, np.ndarray]:
  return {k: np.asarray(v.get_value()) for k, v in flat_params(model, MotionParam).items()}


def to_animatediff(state_dict) -> dict:
  """diffusers MotionAdapter keys -> original AnimateDiff keys (inverting diffusers' converter), with the
  `pos_encoder.pe` tables the original checkpoints carry."""
  out = {}
  for key, value in state_dict.items():
    if key.endswith('pos_embed.pe'):
      key = key.replace('pos_embed.pe', 'pos_encoder.pe')
    for orig, new in ANIMATEDIFF_RENAMES[1:]:
      key = key.replace(new, orig)
    head, tail = key.split('.motion_modules.', 1)
    index, rest = tail.split('.', 1)
    out[f'{head}.motion_modules.{index}.temporal_transformer.{rest}'] = value
  # original checkpoints keep one position table per attention block
  for key in [k for k in out if k.endswith('transformer_blocks.0.pos_encoder.pe')]:
    stem = key[:-len('pos_encoder.pe')]
    pe = out.pop(key)
    for j in (0, 1):
      out[f'{stem}attention_blocks.{j}.pos_encoder.pe'] = pe
  return out


def test_animatediff_checkpoint_equals_diffusers_import(video_unet, tmp_path):
  a = adapter()
  sd = a.state_dict()
  a.save_pretrained(tmp_path / 'adapter')
  orig = to_animatediff(sd)
  assert is_animatediff_format(orig) and not is_animatediff_format(sd)
  assert any('.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight' in k for k in orig)
  assert any(k.endswith('.norms.0.weight') for k in orig) and any(k.endswith('.ff_norm.bias') for k in orig)
  torch.save({'state_dict': orig}, tmp_path / 'mm.ckpt')

  spatial_before = {k: np.asarray(v.get_value()) for k, v in
                    flat_params(video_unet, nnx.All(nnx.Param, nnx.Not(MotionParam))).items()}
  load_motion(video_unet, str(tmp_path / 'adapter'))
  from_folder = motion_values(video_unet)
  load_motion(video_unet, str(tmp_path / 'mm.ckpt'))
  from_ckpt = motion_values(video_unet)
  assert from_folder.keys() == from_ckpt.keys()
  for k in from_folder:
    assert np.array_equal(from_folder[k], from_ckpt[k]), k
  # the values are the adapter's (linear weights transposed)
  np.testing.assert_array_equal(from_ckpt['down_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_k.kernel'],
                                sd['down_blocks.1.motion_modules.0.transformer_blocks.0.attn2.to_k.weight'].numpy().T)
  for k, v in spatial_before.items():  # spatial weights untouched
    assert np.array_equal(flat_params(video_unet)[k].get_value(), v), k


def test_safetensors_checkpoint(video_unet, tmp_path):
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  sd = adapter(seed=3).state_dict()
  save_file({k: v.clone().contiguous() for k, v in to_animatediff(sd).items()}, str(tmp_path / 'mm.safetensors'))
  load_motion(video_unet, str(tmp_path / 'mm.safetensors'))
  got = motion_values(video_unet)
  np.testing.assert_array_equal(got['mid_block.motion_modules.0.proj_in.bias'],
                                sd['mid_block.motion_modules.0.proj_in.bias'].numpy())


def test_export_loads_in_diffusers(video_unet, tmp_path):
  load_motion_state(video_unet, adapter(seed=5).state_dict())
  save_motion_adapter(video_unet, str(tmp_path / 'out'))
  back = diffusers.MotionAdapter.from_pretrained(str(tmp_path / 'out'))
  theirs = {k: v.numpy() for k, v in back.state_dict().items()}
  ours = motion_state_dict(video_unet)
  assert theirs.keys() == ours.keys()
  for k in ours:
    np.testing.assert_array_equal(theirs[k], ours[k], err_msg=k)
  # and back into a UNet
  before = motion_values(video_unet)
  load_motion_state(video_unet, adapter(seed=6).state_dict())
  load_motion(video_unet, str(tmp_path / 'out'))
  for k, v in motion_values(video_unet).items():
    assert np.array_equal(v, before[k]), k


def test_channel_mismatch_names_the_module(video_unet, tmp_path):
  wrong = adapter(block_out_channels=(32, 96))
  with pytest.raises(ConversionError, match=r'down_blocks\.1\.motion_modules\.0: checkpoint has 96 channels, '
                                            r'the UNet 64'):
    load_motion_state(video_unet, wrong.state_dict())
  wrong.save_pretrained(tmp_path / 'wrong')
  with pytest.raises(ConversionError, match=r'block_out_channels: adapter \[32, 96\], UNet \[32, 64\]'):
    load_motion(video_unet, str(tmp_path / 'wrong'))


def test_incomplete_or_foreign_checkpoints_are_refused(video_unet):
  sd = {k: v.numpy() for k, v in adapter().state_dict().items()}
  before = motion_values(video_unet)
  missing = {k: v for k, v in sd.items() if not k.startswith('mid_block.')}  # a v1 checkpoint: no mid block
  with pytest.raises(ConversionError, match=r'missing in checkpoint .*mid_block\.motion_modules\.0'):
    load_motion_state(video_unet, missing)
  with pytest.raises(ConversionError, match=r'not in model .*conv_in\.weight'):
    load_motion_state(video_unet, {**sd, 'conv_in.weight': np.zeros((32, 12, 3, 3), np.float32)})
  for k, v in motion_values(video_unet).items():  # nothing was loaded
    assert np.array_equal(v, before[k])
  frame = nnx.eval_shape(lambda: UNet2DConditionModel(UNetConfig.from_dict(UNET_CFG), rngs=nnx.Rngs(0)))
  with pytest.raises(ConversionError, match='no motion modules'):
    load_motion_state(frame, sd)


# ---------------------------------------------------------------------------------------------------------------
# The command line: `python -m convert.animatediff in|out`, the video export check of `convert.to_diffusers`, and a
# one-window completion sampled in diffusers from the export.

def _rel_of(text: str, prefix: str) -> float:
  """The `rel=` figure of the line starting with `prefix`."""
  line = next(line for line in text.splitlines() if line.startswith(prefix))
  return float(line.split('rel=')[1].split()[0])


def _safetensors(folder) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  return load_file(str(folder / 'diffusion_pytorch_model.safetensors'))


@pytest.fixture(scope='module')
def frame_pipeline(tmp_path_factory):
  """(our 12-channel frame pipeline converted from a tiny random SD folder, a random MotionAdapter folder that fits
  its UNet, the same weights as an original AnimateDiff .ckpt)."""
  import sys  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import tiny_sd  # pylint: disable=import-outside-toplevel
  from convert import from_diffusers  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp('animatediff_cli')
  sd = tiny_sd.write_sd_folder(root / 'sd')
  assert from_diffusers.main([str(sd), str(root / 'ours'), '--in-channels', '12']) == 0
  a = adapter(seed=11)
  a.save_pretrained(root / 'adapter')
  torch.save({'state_dict': to_animatediff(a.state_dict())}, root / 'mm.ckpt')
  return root / 'ours', root / 'adapter', root / 'mm.ckpt'


@pytest.fixture(scope='module')
def video_pipelines(frame_pipeline, tmp_path_factory):
  """{'per_frame': our video pipeline from the MotionAdapter as imported, 'across': the same weights with
  --norm across-frames}, and the stdout of the per-frame import (with --verify)."""
  from convert import animatediff  # pylint: disable=import-outside-toplevel
  ours, adapter_dir, _ = frame_pipeline
  root = tmp_path_factory.mktemp('video')
  lines = []
  assert animatediff.inflate(ours, str(adapter_dir), root / 'per_frame', verify=True, log=lines.append).rel <= 1e-5
  animatediff.inflate(ours, str(adapter_dir), root / 'across', norm='across-frames', log=lines.append)
  return {'per_frame': root / 'per_frame', 'across': root / 'across'}, '\n'.join(lines)


def test_cli_round_trip_bit_exact_and_per_frame_warning(frame_pipeline, video_pipelines, tmp_path, capsys):
  """adapter in -> our video checkpoint -> adapter out gives back every tensor bit for bit; the original .ckpt of
  the same weights gives the same checkpoint; a per-frame model's export warns with its measured rel."""
  from convert import animatediff  # pylint: disable=import-outside-toplevel
  ours, adapter_dir, ckpt = frame_pipeline
  videos, imported = video_pipelines
  assert 'motion norm: per frame (a MotionAdapter that does not record its norm' in imported
  assert _rel_of(imported, 'verify unet') <= 1e-5  # against diffusers with per-frame GroupNorms put in
  video = videos['per_frame']
  assert json.loads((video / 'unet' / 'config.json').read_text())['motion']['norm_across_frames'] is False
  for name in ('vae', 'text_encoder', 'tokenizer', 'scheduler'):  # the other components are copied as they are
    for f in (ours / name).iterdir():
      assert (video / name / f.name).read_bytes() == f.read_bytes(), f

  assert animatediff.main(['in', str(ours), str(ckpt), str(tmp_path / 'from_ckpt'), '--heads', '4',
                           '--norm-groups', '8']) == 0
  assert 'original AnimateDiff checkpoint: its code normalises per frame' in capsys.readouterr().out
  assert (tmp_path / 'from_ckpt' / 'unet' / 'model.safetensors').read_bytes() == \
      (video / 'unet' / 'model.safetensors').read_bytes()

  assert animatediff.main(['out', str(video), str(tmp_path / 'out')]) == 0
  out = capsys.readouterr().out
  rel = _rel_of(out, 'check motion export')
  assert rel > 1e-3, rel  # diffusers normalises across frames: a different function
  warning = next(line for line in out.splitlines() if line.startswith('warning:'))
  assert f'differ by rel {rel:.3g}' in warning and 'normalise per frame' in warning
  assert 'model.motion_norm_across_frames=True' in warning and 'init.motion_norm_across_frames=True' in warning
  src, back = _safetensors(adapter_dir), _safetensors(tmp_path / 'out')
  assert sorted(src) == sorted(back)
  for k in src:
    assert src[k].dtype == back[k].dtype and src[k].tobytes() == back[k].tobytes(), k
  want = json.loads((adapter_dir / 'config.json').read_text())
  got = json.loads((tmp_path / 'out' / 'config.json').read_text())
  assert {k: got[k] for k in ADAPTER_CFG} == {k: list(v) if isinstance(v, tuple) else v for k, v in
                                               {k: want[k] for k in ADAPTER_CFG}.items()}
  # what it exported says per frame, and reads back as such
  assert animatediff.read_adapter(str(tmp_path / 'out')).why.startswith('recorded in out')


@pytest.fixture(scope='module')
def exported_across(video_pipelines, tmp_path_factory):
  """(`convert.to_diffusers` of the across-frames video pipeline, what it printed)."""
  from convert import to_diffusers  # pylint: disable=import-outside-toplevel
  videos, _ = video_pipelines
  out, lines = tmp_path_factory.mktemp('exported') / 'across', []
  to_diffusers.export_folder(videos['across'], out, log=lines.append)
  return out, '\n'.join(lines)


def test_across_frames_export_is_faithful(video_pipelines, exported_across, tmp_path, capsys):
  """An across-frames video checkpoint exports (convert.to_diffusers) with rel <= 1e-5 and no warning; the
  exported adapter reads back as across frames; --strict refuses a per-frame model and writes nothing."""
  from convert import animatediff, to_diffusers  # pylint: disable=import-outside-toplevel
  videos, _ = video_pipelines
  exported, out = exported_across
  assert _rel_of(out, 'check motion export') <= 1e-5 and 'warning' not in out
  assert sorted(p.name for p in exported.iterdir()) == [
      'model_index.json', 'motion_adapter', 'scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']
  assert animatediff.read_adapter(str(exported / 'motion_adapter')).norm_across_frames
  for cli, args in ((to_diffusers, []), (animatediff, ['out'])):
    assert cli.main(args + [str(videos['per_frame']), str(tmp_path / 'strict'), '--strict']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: --strict: the exported motion model is not the trained one') and '\n' not in err
    assert 'Nothing was written' in err
    assert not (tmp_path / 'strict').exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def one_window_iou(ours_folder, exported, *, size: int, steps: int = 4, guidance: float = 2.0, n: int = 12) -> float:
  """One n-frame window completed by our sampler (AmodalCompleter on `ours_folder`) and by diffusers
  (DDIMScheduler from the exported scheduler/, UNetMotionModel from the exported unet/ + motion_adapter/, the
  exported VAE and text encoder, classifier-free guidance written out here) from the same initial noise, frames,
  visible masks and caption: the IoU of their amodal masks. The mask threshold sits at the median darkness of our
  output, so the masks are neither empty nor full for a random model."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from transformers import CLIPTextModel  # pylint: disable=import-outside-toplevel
  from tgvac_jax.diffusion.ddim import DDIMConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.infer.complete import (AmodalCompleter, CompletionConfig, amodal_mask,  # pylint: disable=C0415
                                        mask_image)
  seed, caption = 3, 'a cat'
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (n, size, size, 3), np.uint8)
  visible = np.zeros((n, size, size), bool)
  for i in range(n):  # a box moving right
    visible[i, size // 4:3 * size // 4, i * size // (2 * n):i * size // (2 * n) + size // 3] = True
  sampler = TemporalSamplerConfig(window_length=n, stride=4, guidance_scale=guidance,
                                  ddim=DDIMConfig(num_inference_steps=steps))
  completer = AmodalCompleter.from_pretrained(ours_folder, CompletionConfig(sampler=sampler))
  ours = completer(frames, visible, caption, seed=seed).rgb

  text = CLIPTextModel.from_pretrained(str(exported / 'text_encoder')).eval()
  vae = diffusers.AutoencoderKL.from_pretrained(str(exported / 'vae')).eval()
  unet = diffusers.UNetMotionModel.from_unet2d(
      diffusers.UNet2DConditionModel.from_pretrained(str(exported / 'unet')),
      diffusers.MotionAdapter.from_pretrained(str(exported / 'motion_adapter'))).eval()
  scheduler = diffusers.DDIMScheduler.from_pretrained(str(exported / 'scheduler'))
  scheduler.set_timesteps(steps)
  sf, lat, f = vae.config.scaling_factor, vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
  key = jax.vmap(jax.random.key)(jnp.asarray([seed], jnp.uint32))[0]  # the completer's noise for this seed
  z = torch.tensor(np.asarray(jax.random.normal(key, (n, size // f, size // f, lat)))).permute(0, 3, 1, 2)
  with torch.inference_mode():
    ids = [torch.tensor(completer.tokenize([c]), dtype=torch.int64) for c in ('', caption)]
    context = torch.cat([text(i).last_hidden_state.repeat(n, 1, 1) for i in ids])  # (2 n, 77, D): uncond, cond
    images = [torch.from_numpy(frames).permute(0, 3, 1, 2).float() * (2 / 255) - 1,
              torch.from_numpy(np.asarray(mask_image(visible))).permute(0, 3, 1, 2)]
    cond = torch.cat([vae.encode(x).latent_dist.mode() * sf for x in images], 1).permute(1, 0, 2, 3)[None]
    for t in scheduler.timesteps:
      video = z.permute(1, 0, 2, 3)[None]  # (1, C, F, h, w)
      both = torch.cat([torch.cat([video, torch.zeros_like(cond)], 1), torch.cat([video, cond], 1)])
      out = unet(both, t, context).sample
      out = out[0] + guidance * (out[1] - out[0])
      z = scheduler.step(out.permute(1, 0, 2, 3), t, z).prev_sample
    theirs = vae.decode(z / sf).sample.permute(0, 2, 3, 1).numpy()
  theirs = np.clip(np.round((theirs + 1) * 127.5), 0, 255).astype(np.uint8)
  darkness = (1 - ours.astype(np.float32) / 255).max(-1)
  threshold = (np.round(np.median(darkness) * 255) + 0.5) / 255
  a, b = amodal_mask(ours, threshold), amodal_mask(theirs, threshold)
  iou = float((a & b).sum() / (a | b).sum())
  print(f'one window: mask IoU {iou:.4f}, object fraction {a.mean():.2f}, rgb max |diff| '
        f'{np.abs(ours.astype(int) - theirs).max()} of 255')
  assert 0.2 < a.mean() < 0.8
  return iou


def test_one_window_completion_in_diffusers_gives_our_masks(video_pipelines, exported_across):
  videos, _ = video_pipelines
  assert one_window_iou(videos['across'], exported_across[0], size=16) >= 0.99


@pytest.mark.slow
def test_demo_sized_export(tmp_path):
  """configs/demo.py's model block (random weights, its v-prediction zero-SNR schedule) across frames: the export
  has rel <= 1e-5 and a one-window completion in diffusers gives our masks (32 x 32 frames, 12 frames, the demo's
  6 steps and guidance 2); per frame, the export warns with its rel."""
  from configs import demo  # pylint: disable=import-outside-toplevel
  from convert import to_diffusers  # pylint: disable=import-outside-toplevel
  from tests.infer.fakes import random_model  # pylint: disable=import-outside-toplevel
  from tgvac_jax import text  # pylint: disable=import-outside-toplevel
  from tgvac_jax.diffusion import ddim, scheduler_config  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.checkpoint import save_pipeline  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.clip import CLIPTextModel  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.vae import AutoencoderKL  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train import stages  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.step import schedule_config  # pylint: disable=import-outside-toplevel
  d = demo.get_config()
  vocab = text.write_char_tokenizer(tmp_path / 'tokenizer')
  rels = {}
  for across in (False, True):
    d.model.motion_norm_across_frames = across
    cfgs = stages.scratch_configs(d.model, d.data.size, vocab, motion=True)
    classes = (UNet2DConditionModel, AutoencoderKL, CLIPTextModel)
    models = {name: random_model(lambda k=k, cfg=cfg: k(cfg, rngs=nnx.Rngs(0)), seed=i)
              for i, (name, k, cfg) in enumerate(zip(('unet', 'vae', 'text_encoder'), classes, cfgs))}
    schedule = schedule_config(motion_config_for_demo(d))  # as the trainer exports it (train/checkpoints.py)
    ours = save_pipeline(tmp_path / f'ours_{across}', models, {'tokenizer': tmp_path / 'tokenizer'},
                         scheduler=scheduler_config.Scheduler(schedule, ddim.for_schedule(schedule)))
    lines = []
    to_diffusers.export_folder(ours, tmp_path / f'exported_{across}', log=lines.append)
    rels[across] = _rel_of('\n'.join(lines), 'check motion export')
    print(f'demo-sized random model, motion norm across frames={across}: export rel {rels[across]:.3g}')
  assert rels[True] <= 1e-5 and rels[False] > 1e-4
  assert one_window_iou(tmp_path / 'ours_True', tmp_path / 'exported_True', size=d.data.size,
                        steps=d.sample.steps, guidance=d.sample.guidance_scale) >= 0.99


def motion_config_for_demo(d):
  """The trainer config of the demo's motion stage, for its noise schedule."""
  from configs import motion  # pylint: disable=import-outside-toplevel
  t = motion.get_config('tiny')
  t.diffusion.update(d.diffusion)
  return t


def test_bad_inputs_one_line_no_output(frame_pipeline, video_pipelines, tmp_path, capsys):
  from convert import animatediff, to_diffusers  # pylint: disable=import-outside-toplevel
  ours, adapter_dir, _ = frame_pipeline
  videos, _ = video_pipelines
  (tmp_path / 'notes.ckpt').write_text('not a checkpoint')
  adapter(block_out_channels=(32, 96)).save_pretrained(tmp_path / 'wide')
  out = tmp_path / 'out'
  cases = [
      (['in', ours, tmp_path / 'notes.ckpt', out], 'notes.ckpt: not a readable weights file'),
      (['in', ours, ours / 'vae' / 'model.safetensors', out], 'no motion-module weights'),
      (['in', ours, ours / 'vae', out], 'vae: no diffusion_pytorch_model.safetensors (or .bin) in this folder'),
      (['in', ours, tmp_path / 'wide', out], 'block_out_channels: adapter [32, 96], UNet [32, 64]'),
      (['in', ours, tmp_path / 'missing', out], 'missing: no such file or folder'),
      (['in', ours / 'vae', adapter_dir, out], 'a AutoencoderKL, not a UNet'),
      (['in', adapter_dir, adapter_dir, out], 'no "_class" field'),
      (['in', ours, adapter_dir, out, '--heads', '2'], '--heads 2 contradicts its config.json'),
      (['out', ours, out], 'no motion modules (a frame checkpoint'),
      (['out', tmp_path / 'missing', out], 'no such folder'),
  ]
  for args, message in cases:
    assert animatediff.main([str(a) for a in args]) == 2, args
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, (args, err)
  wide = tmp_path / 'wide_video'
  # widths that do not match, from a bare weights file (no config.json to compare first): the module is named
  assert animatediff.main(['in', str(ours), str(tmp_path / 'wide' / 'diffusion_pytorch_model.safetensors'),
                           str(wide), '--heads', '4', '--norm-groups', '8']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'down_blocks.1.motion_modules.0: checkpoint has 96 channels, the UNet 64' in err
  assert to_diffusers.main([str(adapter_dir), str(out)]) == 2
  assert capsys.readouterr().err.count('\n') == 1
  assert not out.exists() and not wide.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
