"""slimnet/errors.py: one hierarchy, with the old names as aliases, raised where they belong."""
import pytest

import slimnet
from slimnet import errors
from slimnet.config import load_config


def test_every_error_is_a_slimnet_error_and_the_old_names_are_aliases():
    import slimnet.checkpoint
    import slimnet.config
    import slimnet.search
    import slimnet.space
    import slimnet.train

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.SlimnetError)
    assert slimnet.config.ConfigError is errors.ExperimentConfigError
    assert slimnet.space.ConfigError is slimnet.ConfigError is errors.ChannelConfigError
    assert slimnet.search.SearchError is errors.SearchError
    assert slimnet.train.TrainingDiverged is errors.TrainingDiverged
    assert slimnet.checkpoint.NonFiniteError is errors.NonFiniteError
    assert errors.ExperimentConfigError is not errors.ChannelConfigError


def test_the_two_config_errors_are_raised_where_they_belong():
    with pytest.raises(errors.ExperimentConfigError, match="optim.lrr"):
        load_config(None, ["optim.lrr=0.1"])
    space = slimnet.build("resnet20", num_classes=10, input_size=32).space
    with pytest.raises(errors.ChannelConfigError):
        space.config({"no_such_group": 3})
    with pytest.raises(errors.SlimnetError):     # one except clause catches both
        load_config(None, ["train.mode=nope"])
