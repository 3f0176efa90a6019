"""Datasets (dSprites, Fashion-MNIST, pinwheel) and the device-resident input pipeline."""

from decompvae.data.dsprites import DSprites
from decompvae.data.dsprites import FACTOR_NAMES
from decompvae.data.dsprites import FACTOR_SIZES
from decompvae.data.dsprites import factor_value_tables
from decompvae.data.dsprites import load_dsprites
from decompvae.data.dsprites import load_npz as load_dsprites_npz
from decompvae.data.dsprites import load_tfds as load_dsprites_tfds
from decompvae.data.dsprites import render_dsprites
from decompvae.data.errors import DataError
from decompvae.data.fashion_mnist import LabelledImages
from decompvae.data.fashion_mnist import load_fashion_mnist
from decompvae.data.fashion_mnist import to_unit_interval
from decompvae.data.idx_file import read_idx
from decompvae.data.packing import unpack
from decompvae.data.pinwheel import load_pinwheel
from decompvae.data.pinwheel import make_pinwheel
from decompvae.data.pipeline import DeviceDataset
from decompvae.data.pipeline import batch_indices
from decompvae.data.pipeline import get_batch
from decompvae.data.pipeline import holdout_split
from decompvae.data.pipeline import host_batch
from decompvae.data.pipeline import make_batch_fn
from decompvae.data.pipeline import steps_per_epoch
from decompvae.data.pipeline import to_device
from decompvae.data.render import render_sprites
