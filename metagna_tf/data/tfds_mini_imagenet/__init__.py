"""TFDS builder ``mini_imagenet``: importing this package registers it with TFDS.

    import tensorflow_datasets as tfds
    import metagna_tf.data.tfds_mini_imagenet  # noqa: F401 - registers "mini_imagenet"

    ds = tfds.load("mini_imagenet", split="train", download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="/path/to/mini-imagenet")})
"""

from metagna_tf.data.tfds_mini_imagenet.mini_imagenet_dataset_builder import Builder

__all__ = ["Builder"]
