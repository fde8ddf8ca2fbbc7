"""Backbones by name."""

from __future__ import annotations

from metagna_tf.models.conv4 import Conv4

BACKBONES = {"conv4": Conv4}


def build_backbone(config):
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[config.backbone](
        channels=config.channels, filters=config.filters, downsample=config.downsample,
        activation=config.activation, feature_reduce=config.feature_reduce,
        bn_eps=config.bn_eps, dtype=config.dtype, name="backbone")
