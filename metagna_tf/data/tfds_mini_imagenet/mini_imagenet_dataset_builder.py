"""``mini_imagenet``: a TFDS builder over any local copy of mini-ImageNet.

mini-ImageNet has no official download, so the data is taken from
``manual_dir`` in any of the formats ``metagna_tf.data.mini_imagenet`` reads
(pickle caches, MetaOptNet/RFS pickles, Ravi & Larochelle CSVs + images/, or a
split folder tree), through the same readers, safe unpickling included.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from metagna_tf.data import mini_imagenet

# class count per split (Ravi & Larochelle); labels are global: train 0-63, val 64-79, test 80-99
CLASSES = {"train": 64, "val": 16, "test": 20}
OFFSETS = {"train": 0, "val": 64, "test": 80}

_CITATION = """
@inproceedings{vinyals2016matching,
  title={Matching Networks for One Shot Learning},
  author={Vinyals, Oriol and Blundell, Charles and Lillicrap, Timothy and Kavukcuoglu, Koray
          and Wierstra, Daan},
  booktitle={NeurIPS}, year={2016}}
@inproceedings{ravi2017optimization,
  title={Optimization as a Model for Few-Shot Learning},
  author={Ravi, Sachin and Larochelle, Hugo}, booktitle={ICLR}, year={2017}}
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """mini-ImageNet 84x84x3, 64/16/20 classes (train/validation/test), from a manual copy."""

    name = "mini_imagenet"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: reads the four common mini-ImageNet formats."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put one copy of mini-ImageNet in `manual_dir` (`~/tensorflow_datasets/downloads/manual/` or
    `tfds.download.DownloadConfig(manual_dir=...)`), in any of these layouts:

    * mini-imagenet-cache-{train,val,test}.pkl (image_data, class_dict);
    * miniImageNet_category_split_{train_phase_train,val,test}.pickle (MetaOptNet / RFS);
    * {train,val,test}.csv (filename,label) with images/ holding the raw JPEGs
      (Ravi & Larochelle's split);
    * {train,val,test}/<wnid>/*.jpg.

    Pickles are loaded with a restricted unpickler (NumPy arrays and containers only).
    See docs/datasets.md of metagna-tf.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="mini-ImageNet (Vinyals et al. 2016) with the class split of Ravi & "
                        "Larochelle (2017): 100 ImageNet classes x 600 images at 84x84.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(84, 84, 3)),
                "label": tfds.features.ClassLabel(num_classes=100),
                "class_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/twitter/meta-learning-lstm",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = Path(str(dl_manager.manual_dir))
        return {"train": self._generate_examples(root, "train"),
                "validation": self._generate_examples(root, "val"),
                "test": self._generate_examples(root, "test")}

    def _generate_examples(self, root: Path, split: str):
        pool = mini_imagenet.load(root, split, image_size=84, channels=3)
        if pool.num_classes > CLASSES[split]:
            raise ValueError(f"mini_imagenet {split} in {root}: {pool.num_classes} classes, but "
                             f"mini-ImageNet's {split} split has {CLASSES[split]}")
        for c, (name, idx) in enumerate(zip(pool.class_names, pool.class_indices, strict=True)):
            for i in idx:
                yield f"{split}_{int(i)}", {"image": pool.images[i],
                                            "label": OFFSETS[split] + c, "class_name": name}
