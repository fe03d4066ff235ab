"""Training of zoo models on built-in or user data (with gated-compression losses)."""

from edgegate.train.loop import LossFn, TrainConfig, TrainResult, train_model

__all__ = ["LossFn", "TrainConfig", "TrainResult", "train_model"]
