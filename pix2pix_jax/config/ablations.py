"""The paper's ablations (Isola et al. 2017, Tables 1-3) as named overrides of a base config.

`GRIDS[grid][row]` is a dict of dotted config fields to set on top of the dataset's config;
`python -m pix2pix_jax.eval.ablate --grid <grid>` trains, evaluates and tabulates every row. An
empty dict is the paper's full recipe (U-Net, conditional 70x70 PatchGAN, L1 + cGAN).
"""

from typing import Any

Overrides = dict[str, Any]

# Table 1: which terms the objective has. GAN rows use an unconditional D (it sees y only).
TABLE1: dict[str, Overrides] = {
    "L1": {"loss.gan_weight": 0.0},
    "GAN": {"loss.lambda_l1": 0.0, "model.conditional_d": False},
    "cGAN": {"loss.lambda_l1": 0.0},
    "L1+GAN": {"model.conditional_d": False},
    "L1+cGAN": {},
}

# Table 2: skip connections, each with L1 alone and with L1 + cGAN.
TABLE2: dict[str, Overrides] = {
    "Encoder-decoder (L1)": {"model.generator": "encoder_decoder", "loss.gan_weight": 0.0},
    "Encoder-decoder (L1+cGAN)": {"model.generator": "encoder_decoder"},
    "U-Net (L1)": {"loss.gan_weight": 0.0},
    "U-Net (L1+cGAN)": {},
}

# Table 3: the discriminator's receptive field (L1 + cGAN throughout).
TABLE3: dict[str, Overrides] = {
    "PixelGAN 1x1": {"model.n_layers_d": 0},
    "PatchGAN 16x16": {"model.n_layers_d": 1},
    "PatchGAN 70x70": {"model.n_layers_d": 3},
    "ImageGAN 286x286": {"model.n_layers_d": 5},
}

# Not in the paper: the objectives of pix2pix's successors (issue 7), on the same footing.
OBJECTIVES: dict[str, Overrides] = {
    "vanilla (paper)": {},
    "LSGAN": {"loss.gan_mode": "lsgan"},
    "hinge": {"loss.gan_mode": "hinge"},
    "WGAN-GP": {"loss.gan_mode": "wgangp", "model.norm": "instance"},
    "RaGAN": {"loss.gan_mode": "ragan"},
    "R1 (gamma 1)": {"loss.r1_gamma": 1.0},
    "spectral norm D": {"model.spectral_norm_d": True},
    "3-scale D + FM": {"model.num_d": 3, "loss.feature_matching_weight": 10.0},
    "label smoothing 0.9": {"loss.real_label": 0.9},
    "G EMA 0.999": {"model.ema_decay": 0.999},
}

GRIDS: dict[str, dict[str, Overrides]] = {
    "table1": TABLE1,
    "table2": TABLE2,
    "table3": TABLE3,
    "objectives": OBJECTIVES,
}

TITLES: dict[str, str] = {
    "table1": "Loss functions (paper Table 1)",
    "table2": "Generator architecture (paper Table 2)",
    "table3": "Discriminator receptive field (paper Table 3)",
    "objectives": "Objectives of pix2pix's successors (not in the paper)",
}
