"""Search spaces: model families (vit, cnn, resnet, stn, or a user's file) times the training space."""

from spaces.registry import FAMILIES, Candidate, Space, SpaceError, load_space

__all__ = ["FAMILIES", "Candidate", "Space", "SpaceError", "load_space"]
