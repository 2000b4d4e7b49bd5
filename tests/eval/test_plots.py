"""The plots are written as PNGs of the expected size, with and without image metrics."""

from PIL import Image

from tgvac_jax.eval import plots


def test_plots(tmp_path):
  recs = [dict(video='v', frame=t, occlusion_rate=t / 4, occluded=t > 0, iou_c2f=0.9, iou_occ_c2f=0.5 - t / 10,
               lpips=None if t == 2 else 0.1, clip=None, tc=None if t == 0 else 0.95, ssim_occ=None)
          for t in range(4)]
  plots.occluded_iou_vs_rate(recs, tmp_path / 'a.png')
  plots.along_video(recs, 'v', tmp_path / 'b.png')
  plots.occluded_iou_vs_rate([], tmp_path / 'c.png')  # no occluded frame: an empty plot, no error
  for name, size in (('a.png', (600, 400)), ('b.png', (700, 400)), ('c.png', (600, 400))):
    with Image.open(tmp_path / name) as im:
      assert im.format == 'PNG' and im.size == size
