"""The training engine (see :mod:`slimnet.train.trainer`)."""
from .trainer import *  # noqa: F401,F403
from .trainer import (REPLACED, DistInfo, TrainPlan, _stage_previous_run, check_resume_compatible,  # noqa: F401
                      distill_ramp, init_distributed, make_optimizer, train_step, width_loss)
