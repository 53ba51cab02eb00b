"""The prior sampler: mutations of the best completed trials (the references first), uniform draws otherwise."""

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search.study.prior_sampler import PriorSampler, mutate
from search.study.setup import make_sampler
from spaces import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_with_references(sampler, space_name="cnn"):
    """A study whose completed trials are the space's references, valued in their order (the first best)."""
    space = load_space(space_name)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for rank, (_, params) in enumerate(space.references().values()):
        study.enqueue_trial(params)
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 0.99 - rank / 100)
    return study, space


def sample(study, space, count):
    configs = []
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial)
        configs.append(trial.params)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # not an incumbent itself
    return configs


def test_without_exploration_or_mutation_a_sampled_config_is_one_of_the_best_trials():
    study, space = study_with_references(PriorSampler(seed=0, explore=0.0, mutation_rate=0.0, top=2))
    best_two = [t.params for t in sorted(study.trials, key=lambda t: -t.value)[:2]]
    configs = sample(study, space, 12)
    assert all(config in best_two for config in configs)
    assert any(config == best_two[1] for config in configs)  # both are drawn from


def test_a_mutation_stays_near_its_base_and_inside_the_space():
    study, space = study_with_references(PriorSampler(seed=1, explore=0.0, top=1, mutation_rate=0.5))
    base = max(study.trials, key=lambda t: t.value)
    configs = sample(study, space, 20)
    for config in configs:
        space.candidate_from_params(config)  # a valid config of the space
        lr = config.get(f"train.lr_{config['train.optimizer']}")
        assert lr is not None
    same_optimizer = [c for c in configs if c["train.optimizer"] == base.params["train.optimizer"]]
    key = f"train.lr_{base.params['train.optimizer']}"
    # the optimizer's own lr (a conditional param) moved by a small step in log space when its base has it
    ratios = [c[key] / base.params[key] for c in same_optimizer if key in c]
    assert ratios and all(0.2 < r < 5 for r in ratios)


def test_exploration_draws_uniformly_and_the_same_seed_samples_the_same_configs():
    first, space = study_with_references(PriorSampler(seed=3, explore=1.0))
    second, _ = study_with_references(PriorSampler(seed=3, explore=1.0))
    assert sample(first, space, 4) == sample(second, space, 4)
    mutated, _ = study_with_references(PriorSampler(seed=3, explore=0.0, mutation_rate=0.0))
    references = [t.params for t in mutated.trials]
    explored = sample(first, space, 8)
    assert any(config not in references for config in explored)


@pytest.mark.parametrize(
    "distribution",
    [
        FloatDistribution(1e-4, 1e-2, log=True),
        FloatDistribution(0.0, 0.3),
        FloatDistribution(0.0, 1.0, step=0.25),
        IntDistribution(1, 8),
        CategoricalDistribution([32, 64, 128]),
    ],
)
def test_a_mutated_value_is_one_the_distribution_can_take(distribution):
    rng = np.random.default_rng(0)
    base = {FloatDistribution: 1e-3, IntDistribution: 4, CategoricalDistribution: 64}[type(distribution)]
    base = 0.25 if isinstance(distribution, FloatDistribution) and not distribution.log else base
    for _ in range(50):
        value = mutate(base, distribution, rng, step=0.3)
        if isinstance(distribution, CategoricalDistribution):
            assert value in distribution.choices and value != base
        else:
            assert distribution.low <= value <= distribution.high
            if distribution.step:
                assert (value - distribution.low) / distribution.step == pytest.approx(
                    round((value - distribution.low) / distribution.step)
                )


def test_run_offers_the_prior_sampler_by_name():
    assert isinstance(make_sampler(0, "prior"), PriorSampler)
    with pytest.raises(ValueError):
        PriorSampler(explore=2.0)
