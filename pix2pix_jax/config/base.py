"""The paper's pix2pix recipe as a config: every field a run can set, with its default.

Dataset configs (`configs/*.py`) start from `base_config()` and override what their data
needs; checkpoints store their config, and `base_config()` fills in fields added since.
"""

import copy
from typing import Any

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The paper's pix2pix recipe (facades settings), unlocked for overrides."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 1  # Global batch, over all devices and hosts.
  c.num_train_steps = -1  # -1: (n_epochs + n_epochs_decay) * steps_per_epoch.
  c.n_epochs = 100  # Constant learning rate...
  c.n_epochs_decay = 100  # ...then linear decay to 0.

  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  c.sample_every_steps = 1000  # PNG grid of input | output | target for fixed val pairs.
  c.num_sample_pairs = 4
  c.keep_checkpoints = 3  # The latest ones; keep_best and keep_every_steps keep more.
  # Validation while training: G in the paper's test mode on data.eval_split (its first
  # eval_num_examples; -1 all), the evaluate metrics, logged as val_<metric>. 0: off.
  c.eval_every_steps = 0
  c.eval_num_examples = -1
  c.eval_batch_size = 8  # Images per generator call while validating.
  c.keep_best = ""  # l1 | psnr | ssim | lpips: also keep the best checkpoint by val_<that>.
  c.keep_every_steps = 0  # > 0: keep the checkpoints at multiples of it forever (snapshots).
  c.nan_policy = "skip"  # A non-finite loss/gradient: skip that step (skip) or stop (stop).

  c.data = ml_collections.ConfigDict()
  c.data.name = "facades"  # synthetic | facades | cityscapes | maps | edges2shoes | ...| folder
  c.data.manual_dir = ""  # Folder holding an already downloaded archive (tfds manual_dir).
  c.data.data_dir = ""  # tfds data_dir; "" = tfds default (~/tensorflow_datasets).
  c.data.path = ""  # For data.name=folder: the user's folder of pairs.
  c.data.direction = "BtoA"  # AtoB or BtoA: which half of the pair is the input.
  c.data.preprocess = "resize_and_crop"  # resize_and_crop|crop|scale_width|scale_width_and_crop|none
  c.data.load_size = 286
  c.data.crop_size = 256
  c.data.flip = True
  c.data.eval_split = "val"  # Split used for sample grids and validation.
  # Test-time resize (evaluate, validation, sample grids): -1 = crop_size, the official
  # test.py's (whole image, no crop); data.load_size gives resize-then-centre-crop.
  c.data.test_load_size = -1
  c.data.max_dataset_size = -1  # Use at most this many training pairs (the first); -1 all.
  c.data.serial_batches = False  # True: training pairs in stored order, no shuffling.
  c.data.reader = "tf"  # tf (tf.data) | numpy (no TensorFlow at training time).
  c.data.size_mode = "reflect"  # Reach a multiple of 2**num_downs: reflect|zeros pad, resize.
  c.data.on_bad_file = "error"  # error | skip (and log) corrupt or unreadable images.
  c.data.val_fraction = 0.1  # data.name=folder without split folders: share held out as val.
  c.data.num_workers = 0  # Threads decoding and augmenting; 0 = min(8, CPU count).

  c.model = ml_collections.ConfigDict()
  c.model.generator = "unet"  # unet | encoder_decoder (Table 2) | resnet_9blocks | resnet_6blocks
  c.model.input_nc = 3
  c.model.output_nc = 3
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.num_downs = 8  # 8 for 256x256 (unet_256), 7 for 128x128.
  c.model.n_layers_d = 3  # 0 PixelGAN 1x1, 1 16x16, 3 70x70, 5 286x286.
  c.model.norm = "batch"  # batch | instance | none
  c.model.dropout_rate = 0.5
  c.model.init_type = "normal"  # normal | xavier | kaiming | orthogonal (official init_weights).
  c.model.init_gain = 0.02  # Their gain (kaiming takes none), and BatchNorm scales' std.
  c.model.conditional_d = True  # D sees concat(x, y); False: y alone (unconditional GAN).
  c.model.dtype = "float32"  # Compute dtype: float32 | bfloat16 (params stay float32).
  # Successors' tricks (issue 7); the defaults are the paper's networks.
  c.model.num_d = 1  # PatchGANs on 1x, 1/2x, 1/4x... inputs (pix2pixHD multi-scale D).
  c.model.spectral_norm_d = False  # Spectral normalisation of every D convolution.
  c.model.ema_decay = 0.0  # > 0: keep an EMA of G's weights (state.g_ema_params) for eval.

  c.loss = ml_collections.ConfigDict()
  c.loss.gan_mode = "vanilla"  # vanilla | lsgan | hinge | wgangp | ragan
  c.loss.gan_weight = 1.0  # 0: L1 only (paper Table 1).
  c.loss.reconstruction = "l1"  # l1 | l2 | none
  c.loss.lambda_l1 = 100.0  # Weight of the reconstruction term.
  c.loss.lambda_gp = 10.0  # WGAN-GP gradient penalty weight (gan_mode=wgangp only).
  c.loss.r1_gamma = 0.0  # > 0: R1 penalty gamma / 2 * ||grad D(real)||^2 (Mescheder 2018).
  c.loss.feature_matching_weight = 0.0  # > 0: pix2pixHD D-feature matching L1 for G (10 there).
  c.loss.real_label = 1.0  # < 1: one-sided label smoothing of D's real target (vanilla, lsgan).

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-4
  c.optim.lr_d = -1.0  # -1: same as lr (set it for TTUR).
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  # linear_per_step: constant for the n_epochs share of the steps, then linear to 0 by the
  # last step. Or the official per-epoch policies: linear | step | plateau | cosine
  # (pix2pix_jax.train.optimizers).
  c.optim.lr_policy = "linear_per_step"
  c.optim.lr_decay_iters = 50  # lr_policy=step: x0.1 every this many epochs (official name).
  return c


def with_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields set; an unknown field is an error, not a new one."""
  config = copy.deepcopy(config)
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"override {dotted!r}: the config has no such field")
    node[leaf] = value
  return config
