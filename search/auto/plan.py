"""How `auto` spends its budget, as pure functions of measured costs: no training, no I/O here.

Priors first, search where it pays (AutoGluon's zero-shot portfolios): the references form an
ordered portfolio, trained first as proxies on the training rows, each for the same few epochs.
The final training then retrains the ensemble's members on every labelled digit, its time shared by
ensemble weight. It first claims what it can use (REFIT_TARGET_EPOCHS for each of the portfolio's
leading configs); the search gets only what is left beyond that, and only when that holds enough
sampled trials' first rungs to be worth starting. On a slow CPU that means no search at all; on a
fast one or a GPU, most of the budget. Every figure is re-planned from what the run has measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search.study.rungs import climb, ladder
from search.train.timed import MAX_TIMED_EPOCHS

# The references in the order they are trained when this storage has measured none of them: by
# their validation accuracy at 4 epochs on Kaggle's digits (BENCHMARKS.md), fastest first on ties.
PRIOR_ORDER = ("stn-cnn", "bn-cnn", "big-kernel", "resnet5", "vit-seed", "lenet", "vit-s4")
# Share of the usable time for the portfolio's proxies; the first config may take up to
# FIRST_CONFIG_SHARE when even it does not fit (without one trained model there is no submission).
PORTFOLIO_SHARE = 0.25
FIRST_CONFIG_SHARE = 0.5
PORTFOLIO_CORE = 3  # the proxies' epochs are sized so that this many configs fit the portfolio's share
# Seconds kept for building the ensemble and writing the submission and report (stored
# probabilities only: measured at 5-20 s on Kaggle's files).
FINAL_SECONDS = 30.0
FINAL_SHARE = 0.05  # of a short budget
# A proxy only weighs its config in the ensemble before it is retrained: a few epochs do.
MIN_PROXY_EPOCHS = 2
MAX_PROXY_EPOCHS = 5
MAX_SEARCH_EPOCHS = 10
# Optimizer steps of a sampled trial's cheapest rung, at the least: cheap rungs of about 40 steps
# ranked cnn configs at Spearman 0.88 (BENCHMARKS.md, "How well a cheap rung ranks configs"), but an
# hour on an AVX2 CPU left all four of its 33-step first rungs at chance.
MIN_RUNG_STEPS = 100
MIN_SEARCH_RUNGS = 8  # a search that cannot screen this many sampled configs is not started
# The final training: each member's epochs on all labelled digits follow its ensemble weight.
MIN_REFIT_EPOCHS = 3
REFIT_TARGET_EPOCHS = 20  # one-cycle CNNs on these digits gain little past this; time beyond it goes to the search
MAX_REFIT_EPOCHS = MAX_TIMED_EPOCHS
MAX_REFIT_MODELS = 3
# A trial's recorded speed counts its training steps only, and each retraining epoch also validates:
# retraining is planned at this many times that pace (its first epoch then corrects the plan).
REFIT_TIME_SAFETY = 1.2


@dataclass(frozen=True)
class ConfigCost:
    """One portfolio config (a reference) and its training speed on this device, measured or predicted."""

    family: str
    name: str
    images_per_second: float
    batch_size: int = 128

    def epoch_seconds(self, images: int) -> float:
        return images / self.images_per_second

    def proxy_seconds(self, epochs: int, images: int, climbs: bool) -> float:
        """A proxy of `epochs` epochs on `images` training digits; climbing every rung costs their images too."""
        return epochs * self.epoch_seconds(images) * (climb(images) if climbs else 1.0)

    def first_rung_seconds(self, epochs: int, images: int) -> float:
        """The cheapest rung of a sampled trial like it: what most sampled configs train before they stop."""
        return self.epoch_seconds(ladder(epochs, images)[0].images)


@dataclass(frozen=True)
class Plan:
    usable: float  # the budget less the final phase
    portfolio_seconds: float
    search_seconds: float  # 0: no search
    refit_seconds: float  # 0: no final training
    final_seconds: float
    epochs: int  # of every proxy and search trial in a new study
    notes: tuple[str, ...]  # why there is no search or no final training, or how each was sized

    @property
    def searches(self) -> bool:
        return self.search_seconds > 0


def order_portfolio(names: Sequence[str], measured: dict[str, float]) -> list[str]:
    """The references to train first: those this storage measured, best validation accuracy first, then the rest in PRIOR_ORDER."""
    rank = {name: index for index, name in enumerate(PRIOR_ORDER)}
    known = sorted((n for n in names if n in measured), key=lambda n: (-measured[n], rank.get(n, len(rank)), n))
    unknown = sorted((n for n in names if n not in measured), key=lambda n: (rank.get(n, len(rank)), n))
    return known + unknown


def search_floor_epochs(train_images: int, batch_size: int) -> int:
    """The fewest epochs whose cheapest rung takes at least MIN_RUNG_STEPS optimizer steps."""
    rows = ladder(1, train_images)[0].rows
    return math.ceil(MIN_RUNG_STEPS / max(1, math.ceil(rows / batch_size)))


def refit_claim(costs: Sequence[ConfigCost], all_images: int) -> float:
    """What the final training can use: REFIT_TARGET_EPOCHS for each of the leading configs it could retrain."""
    return sum(REFIT_TARGET_EPOCHS * REFIT_TIME_SAFETY * c.epoch_seconds(all_images) for c in costs[:MAX_REFIT_MODELS])


def search_pays(seconds: float, costs: Sequence[ConfigCost], train_images: int) -> bool:
    """Whether `seconds` of search holds MIN_SEARCH_RUNGS first rungs of the cheapest family, at the step floor."""
    if not costs:
        return False
    cheapest = min(c.first_rung_seconds(search_floor_epochs(train_images, c.batch_size), train_images) for c in costs)
    return seconds >= MIN_SEARCH_RUNGS * cheapest


def plan_budget(
    left: float, costs: Sequence[ConfigCost], train_images: int, all_images: int, *, search: bool, refit: bool
) -> Plan:
    """Split `left` seconds between the portfolio, the search, the final training and the final phase.

    `costs` are the portfolio's configs in the order they would train.
    """
    final = min(FINAL_SECONDS, FINAL_SHARE * left)
    usable = left - final
    notes = []
    portfolio = PORTFOLIO_SHARE * usable
    # without a final training its share goes to the search, or to longer proxies
    search_seconds = usable - portfolio - (min(usable - portfolio, refit_claim(costs, all_images)) if refit else 0.0)
    if not search:
        notes.append("no search (--no-search)")
        search_seconds = 0.0
    elif not search_pays(search_seconds, costs, train_images):
        notes.append(
            f"no search: the final training can use all but {search_seconds:.0f}s, too little to screen {MIN_SEARCH_RUNGS} sampled configs"
        )
        search_seconds = 0.0
    if not refit:
        portfolio = usable - search_seconds
    refit_seconds = usable - portfolio - search_seconds if refit else 0.0
    if refit:
        fastest = min((REFIT_TIME_SAFETY * c.epoch_seconds(all_images) for c in costs), default=math.inf)
        if refit_seconds < MIN_REFIT_EPOCHS * fastest:
            notes.append(
                f"no final training: {MIN_REFIT_EPOCHS} epochs on all {all_images:,} digits take {MIN_REFIT_EPOCHS * fastest:.0f}s, "
                f"over the {refit_seconds:.0f}s left for it"
            )
            portfolio, refit_seconds = portfolio + refit_seconds, 0.0
        else:
            notes.append(
                f"{refit_seconds:.0f}s for the final training on all {all_images:,} labelled digits, shared by ensemble weight"
            )
    else:
        notes.append("no final training (--no-refit)")
    climbs = search_seconds > 0
    if climbs:
        low, high = search_floor_epochs(train_images, costs[0].batch_size) if costs else 1, MAX_SEARCH_EPOCHS
    else:  # proxies that are submitted as they are train longer
        low, high = MIN_PROXY_EPOCHS, MAX_PROXY_EPOCHS if refit_seconds else MAX_SEARCH_EPOCHS
    one_epoch = sum(c.proxy_seconds(1, train_images, climbs) for c in costs[:PORTFOLIO_CORE])
    epochs = max(low, min(high, math.floor(portfolio / one_epoch))) if one_epoch > 0 else low
    return Plan(usable, portfolio, search_seconds, refit_seconds, final, epochs, tuple(notes))


def fits_portfolio(
    cost: ConfigCost, epochs: int, train_images: int, climbs: bool, seconds_left: float, first: bool, usable: float
) -> str | None:
    """None when the config's proxy fits the portfolio's time left, else why it is left out (one line)."""
    needed = cost.proxy_seconds(epochs, train_images, climbs)
    room = max(seconds_left, FIRST_CONFIG_SHARE * usable) if first else seconds_left
    if needed <= room:
        return None
    return f"{cost.name} ({cost.family}): a {epochs}-epoch proxy would take {needed:.0f}s at {cost.images_per_second:,.0f} images/s, over the {max(0.0, room):.0f}s left"


def families_left_out(costs: Sequence[ConfigCost], plan: Plan, train_images: int, done: set[str]) -> dict[str, str]:
    """Families none of whose references is predicted to fit the portfolio's time (family -> why, one line).

    The configs are walked in order as the portfolio would train them; `done` (trained by an earlier run) cost nothing.
    """
    kept: set[str] = set()
    left = plan.portfolio_seconds
    for cost in costs:
        if cost.name in done:
            kept.add(cost.family)
        elif fits_portfolio(cost, plan.epochs, train_images, plan.searches, left, not kept, plan.usable) is None:
            kept.add(cost.family)
            left -= cost.proxy_seconds(plan.epochs, train_images, plan.searches)
    reasons = {}
    for family in dict.fromkeys(c.family for c in costs if c.family not in kept):
        cheapest = min((c for c in costs if c.family == family), key=lambda c: c.epoch_seconds(train_images))
        seconds = cheapest.proxy_seconds(plan.epochs, train_images, plan.searches)
        reasons[family] = (
            f"{family}: a {plan.epochs}-epoch proxy of its cheapest reference, {cheapest.name}, would take {seconds:.0f}s "
            f"at {cheapest.images_per_second:,.0f} images/s, more than the portfolio's {plan.portfolio_seconds:.0f}s leave it"
        )
    return reasons


def round_share(left: float, rounds: int, round_number: int, families: int) -> float:
    """Each family's slice in round `round_number` (from 1): the rounds still to come share `left` equally."""
    return left / (rounds - round_number + 1) / families


def rounds_for(families: int) -> int:
    """Rounds of successive halving until one family is left: 4 -> 3 (4, 2, 1), 1 -> 1."""
    return 1 + math.ceil(math.log2(families)) if families > 1 else 1


def survivors(scores: dict[str, tuple[float, float]]) -> list[str]:
    """The better half of the families (at least one): scores are (share of the ensemble's weight, best accuracy)."""
    ranked = sorted(scores, key=lambda family: (-scores[family][0], -scores[family][1], family))
    return ranked[: max(1, math.ceil(len(ranked) / 2))]


def share_refit(
    weights: Sequence[float], epoch_seconds: Sequence[float], seconds: float, least: Sequence[int] | None = None
) -> dict[int, int]:
    """Epochs of each member to retrain (index -> epochs): `seconds` shared in proportion to ensemble weight.

    At most MAX_REFIT_MODELS members, heaviest first; one whose share buys under MIN_REFIT_EPOCHS (or
    under its `least`, the epochs its proxy trained: a shorter retraining would not beat it) is dropped,
    lightest first, and its time goes to the others; none trains over MAX_REFIT_EPOCHS, and what that
    cap frees goes to the others too. Empty when not even the heaviest fits.
    """
    floor = [max(MIN_REFIT_EPOCHS, least[i] if least else 0) for i in range(len(weights))]
    order = [i for i in sorted(range(len(weights)), key=lambda i: -weights[i]) if weights[i] > 0][:MAX_REFIT_MODELS]
    while order:
        epochs = _epochs_by_weight(
            {i: weights[i] for i in order}, {i: REFIT_TIME_SAFETY * epoch_seconds[i] for i in order}, seconds
        )
        if all(epochs[i] >= floor[i] for i in order):
            return epochs
        order = order[:-1]
    return {}


def _epochs_by_weight(weights: dict[int, float], epoch_seconds: dict[int, float], seconds: float) -> dict[int, int]:
    epochs: dict[int, int] = {}
    open_members = dict(weights)
    left = seconds
    while open_members:  # members capped at MAX_REFIT_EPOCHS hand their unused time to the rest
        total = sum(open_members.values())
        capped = {i for i in open_members if left * open_members[i] / total >= MAX_REFIT_EPOCHS * epoch_seconds[i]}
        if not capped:
            for i, weight in open_members.items():
                epochs[i] = math.floor(left * weight / total / epoch_seconds[i])
            break
        for i in capped:
            epochs[i] = MAX_REFIT_EPOCHS
            left -= MAX_REFIT_EPOCHS * epoch_seconds[i]
            del open_members[i]
    return epochs
