"""Prices, what a worker costs, and cost per job: money and SLURM service units.

Cost accrues for resources a worker **holds** (worker-seconds x its size: cores, GiB of
memory, GPUs), idle time included, because that is what an idle cluster costs. It is
then attributed to jobs by their busy time on each worker, and the idle remainder is
reported apart (:func:`packlab.telemetry.cost.attribute`). Spot workers are priced with ``spot_discount``,
reserved capacity with ``reserved_discount``.

On SLURM a site charges **service units**: a job's ``billing`` TRES (its
``TRESBillingWeights`` applied to what it was allocated) times its elapsed hours, as
``sreport -t hours -T billing`` counts them (:func:`service_units`; per queue job:
:func:`packlab.telemetry.cost.attribute_service_units`); ``su_price`` turns them into money.

Every function is pure, so the collectors and the store only feed it.

Examples
--------
>>> p = Pricing(core_hour=0.04, gb_hour=0.005)
>>> worker_cost(p, cores=2, memory="4GiB", seconds=1800)  # (2 x 0.04 + 4 x 0.005) x 0.5 h
0.05
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from .. import checks
from ..errors import bad_value

GIB = 2**30

CURRENCIES = {
    "USD": "US dollar", "EUR": "euro", "GBP": "pound sterling", "JPY": "yen", "CHF": "Swiss franc",
    "CAD": "Canadian dollar", "AUD": "Australian dollar", "NZD": "New Zealand dollar",
    "CNY": "renminbi", "INR": "Indian rupee", "KRW": "won", "SGD": "Singapore dollar",
    "HKD": "Hong Kong dollar", "SEK": "Swedish krona", "NOK": "Norwegian krone", "DKK": "Danish krone",
    "PLN": "zloty", "CZK": "Czech koruna", "BRL": "real", "MXN": "Mexican peso", "ZAR": "rand",
}
"""The ISO 4217 codes packlab knows (the common ones)."""

MARKETS = ("on-demand", "spot", "reserved")
"""How a worker's capacity was bought: at the list price, preemptible, or reserved."""


@dataclass(frozen=True)
class Term:
    """One resource in the price of a worker: ``resource`` (the :meth:`Pricing.hourly`
    keyword; in the store, the ``tel_workers`` column ``column``) in units of ``per``,
    times the :class:`Pricing` field ``price`` per hour."""

    price: str
    resource: str
    column: str
    per: int = 1


TERMS = (
    Term("core_hour", "cores", "threads"),  # a worker's threads are the cores it holds
    Term("gb_hour", "memory", "memory", per=GIB),  # bytes, priced per GiB
    Term("gpu_hour", "gpus", "gpus"),
)
"""What a worker costs per hour held, before its market's discount: the sum of these
terms. The one definition behind :meth:`Pricing.hourly` and :func:`rate_sql`: a new
priced resource is a field of :class:`Pricing` and a term here."""

MARKET_DISCOUNTS = {"spot": "spot_discount", "reserved": "reserved_discount"}
"""The :class:`Pricing` field that discounts each market; a market not here pays the list price."""

PRESETS: dict[str, dict[str, Any]] = {
    # EXAMPLE rates only, roughly public list prices in 2024 (one region, Linux), to show the
    # shape of a price list: they are not a quote. Put your own in packlab.pricing.
    "aws-on-demand": dict(core_hour=0.04048, gb_hour=0.004445, gpu_hour=3.06, spot_discount=0.7,
                          reserved_discount=0.5),  # Fargate vCPU/GB-hour; GPU: a p3.2xlarge hour
    "gcp-on-demand": dict(core_hour=0.033174, gb_hour=0.004446, gpu_hour=0.35, spot_discount=0.6,
                          reserved_discount=0.37),  # N1 custom vCPU/GB-hour; GPU: a T4 hour
    "hpc-service-units": dict(su_price=0.02),  # a centre charging 0.02 per service unit
    "free": {},  # everything 0: count service units and time, no money
}
"""Example price lists for :meth:`Pricing.preset`: illustrative rates, not quotes."""

_PRICES = (*(t.price for t in TERMS), "su_price")
_DISCOUNTS = tuple(MARKET_DISCOUNTS.values())


def check_currency(value: object, field: str = "currency") -> str:
    """An ISO 4217 code that packlab knows (:data:`CURRENCIES`), upper case.

    Examples
    --------
    >>> check_currency("EUR")
    'EUR'
    >>> check_currency("usd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: currency='usd' is invalid: expected an ISO 4217 code... Write 'USD'...
    """
    if isinstance(value, str) and value in CURRENCIES:
        return value
    expected = "an ISO 4217 code such as 'USD', 'EUR' or 'GBP'"
    if isinstance(value, str) and value.strip().upper() in CURRENCIES:
        fix = f"Write {value.strip().upper()!r} (upper case)."
    else:
        close = difflib.get_close_matches(value, list(CURRENCIES), n=1) if isinstance(value, str) else []
        known = ", ".join(sorted(CURRENCIES))
        fix = (f"Did you mean {close[0]!r}? " if close else "") + f"Known codes: {known}."
    raise bad_value(field, value, expected, fix)


@dataclass(frozen=True)
class Pricing:
    """What resources cost per hour held, and how spot and reserved capacity are discounted.

    Parameters
    ----------
    core_hour, gb_hour, gpu_hour : float
        Price of one core, one GiB of memory, one GPU, held for an hour.
    spot_discount, reserved_discount : float
        Fractions off (0 <= x < 1) for spot (preemptible) workers and reserved capacity.
    currency : str
        An ISO 4217 code (:data:`CURRENCIES`).
    su_price : float
        Price of one SLURM service unit (see :func:`service_units`).

    Examples
    --------
    >>> Pricing(core_hour=0.1, spot_discount=0.7).hourly(cores=4, memory=0, market="spot")
    0.12
    >>> Pricing(core_hour=-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: core_hour=-1 is invalid: expected a finite number at least 0. A price...
    """

    core_hour: float = 0.0
    gb_hour: float = 0.0
    gpu_hour: float = 0.0
    spot_discount: float = 0.0
    reserved_discount: float = 0.0
    currency: str = "USD"
    su_price: float = 0.0

    def __post_init__(self) -> None:
        for name in _PRICES:
            value = checks.number(getattr(self, name), name, minimum=0,
                                  fix="A price is a number per hour (or per SU), 0 or more, e.g. 0.04.")
            object.__setattr__(self, name, value)
        for name in _DISCOUNTS:
            off = checks.fraction(getattr(self, name), name, fix="For 30% off write 0.3.")
            object.__setattr__(self, name, off)
        object.__setattr__(self, "currency", check_currency(self.currency))

    @classmethod
    def preset(cls, name: str) -> Pricing:
        """One of the example price lists in :data:`PRESETS` (illustrative, not quotes).

        Examples
        --------
        >>> Pricing.preset("aws-on-demand").spot_discount
        0.7
        """
        return cls(**PRESETS[checks.choice(name, "preset", PRESETS)])

    @classmethod
    def from_config(cls) -> Pricing:
        """The site's own rates, from the ``packlab.pricing`` settings.

        Examples
        --------
        >>> import dask
        >>> with dask.config.set({"packlab.pricing.core-hour": 0.05}):
        ...     Pricing.from_config().core_hour
        0.05
        """
        from .. import config

        # key by key: dask matches ``core_hour`` (a DASK_* variable) and ``core-hour`` alike
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: config.get("pricing." + n.replace("_", "-")) for n in names})

    def discount(self, market: str = "on-demand") -> float:
        """The fraction off for ``market`` (one of :data:`MARKETS`).

        Examples
        --------
        >>> Pricing(spot_discount=0.7).discount("spot"), Pricing().discount("on-demand")
        (0.7, 0.0)
        """
        market = checks.choice(market, "market", MARKETS)
        return getattr(self, MARKET_DISCOUNTS[market]) if market in MARKET_DISCOUNTS else 0.0

    def hourly(self, *, cores: int, memory: int | str, gpus: int = 0, market: str = "on-demand") -> float:
        """The price of one worker of this size for an hour held (``memory`` in bytes or
        ``"4GiB"``; 0 for none)."""
        cores = checks.integer(cores, "cores", minimum=0)
        mem = 0 if memory == 0 and not isinstance(memory, bool) else checks.memory(memory, "memory")
        held = {"cores": cores, "memory": mem, "gpus": checks.integer(gpus, "gpus", minimum=0)}
        base = 0.0
        for t in TERMS:
            amount = held[t.resource]
            base += (amount if t.per == 1 else amount / t.per) * getattr(self, t.price)
        return round(base * (1 - self.discount(market)), 12)


def rate_sql(pricing: Pricing, alias: str = "w") -> tuple[str, tuple]:
    """SQL for a worker's price per **second** held (:meth:`Pricing.hourly` over 3600) over
    the columns of a ``tel_workers`` row named ``alias``, and its parameters: the same
    :data:`TERMS` and :data:`MARKET_DISCOUNTS`, unrounded.

    Examples
    --------
    >>> import sqlite3
    >>> sql, params = rate_sql(Pricing(core_hour=0.1, spot_discount=0.7))
    >>> con = sqlite3.connect(":memory:")
    >>> row = "(SELECT 4 AS threads, 0 AS memory, 0 AS gpus, 'spot' AS market)"
    >>> round(con.execute(f"SELECT {sql} * 3600 FROM {row} w", params).fetchone()[0], 12)
    0.12
    """
    p = check_pricing(pricing)
    parts, params = [], []
    for t in TERMS:
        if t.per == 1:
            parts.append(f"{alias}.{t.column} * ?")
            params.append(getattr(p, t.price))
        else:
            parts.append(f"{alias}.{t.column} * 1.0 / ? * ?")
            params += [t.per, getattr(p, t.price)]
    cases = " ".join(f"WHEN '{market}' THEN ?" for market in MARKET_DISCOUNTS)
    params += [getattr(p, field) for field in MARKET_DISCOUNTS.values()]
    return (f"(({' + '.join(parts)}) * (1 - CASE {alias}.market {cases} ELSE 0 END) / 3600.0)", tuple(params))


def worker_cost(pricing: Pricing, *, cores: int, memory: int | str, seconds: float, gpus: int = 0,
                market: str = "on-demand") -> float:
    """What one worker of this size costs for ``seconds`` held (busy or idle alike).

    Examples
    --------
    >>> p = Pricing(core_hour=0.04, gb_hour=0.005, gpu_hour=2.0, spot_discount=0.5)
    >>> worker_cost(p, cores=4, memory="16GiB", gpus=1, seconds=3600, market="spot")  # (0.16+0.08+2)/2
    1.12
    """
    check_pricing(pricing)
    secs = checks.duration(seconds, "seconds")
    return round(pricing.hourly(cores=cores, memory=memory, gpus=gpus, market=market) * secs / 3600, 12)


def check_pricing(pricing: object) -> Pricing:
    """``pricing`` if it is a :class:`Pricing`, else an error that says how to build one."""
    if not isinstance(pricing, Pricing):
        raise bad_value("pricing", pricing, "a packlab.Pricing",
                        "Build one: packlab.Pricing(core_hour=0.04) or packlab.Pricing.from_config().")
    return pricing


def parse_tres(text: str) -> dict[str, str]:
    """A SLURM TRES string (``scontrol``'s ``TRES=``/``AllocTRES``, ``sacct``'s
    ``AllocTRES``) as a dict.

    Examples
    --------
    >>> parse_tres("cpu=4,mem=16G,node=1,billing=6,gres/gpu=1")["billing"]
    '6'
    """
    text = checks.text(text, "tres", expected="a TRES string such as 'cpu=4,mem=16G,billing=4'")
    out = {}
    for part in text.strip().split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise bad_value("tres", text, "a TRES string such as 'cpu=4,mem=16G,billing=4'",
                            f"The part {part!r} is not key=value.")
        out[key.strip()] = value.strip()
    return out


def billing(tres: str) -> float:
    """The ``billing`` value of a job's TRES: what one hour of it costs in service units.

    Examples
    --------
    >>> billing("cpu=2,mem=4G,node=1,billing=2")
    2.0
    """
    fields = parse_tres(tres)
    if "billing" not in fields:
        raise bad_value("tres", tres, "a TRES string with a billing= value",
                        "Read it from `scontrol show job` (TRES=) or `sacct -o AllocTRES`: "
                        "SLURM adds billing= to every allocation.")
    raw = fields["billing"]
    try:
        value = float(raw)
    except ValueError:
        raise bad_value("billing", raw, "a number of service units per hour",
                        f"The TRES string {tres!r} has a billing= that is not a number.") from None
    return checks.number(value, "billing", minimum=0)


def service_units(billing: float, elapsed: float | str) -> float:
    """SLURM service units: ``billing`` x elapsed hours, as ``sreport -t hours -T billing``.

    ``elapsed`` is seconds, a duration (``"90m"``) or SLURM's ``[D-]HH:MM:SS``.

    Examples
    --------
    >>> service_units(6, "00:30:00")  # 6 billing x 0.5 h
    3.0
    """
    b = checks.number(billing, "billing", minimum=0)
    if isinstance(elapsed, str) and ":" in elapsed:
        zero = set(elapsed.strip()) <= set("0:-") and elapsed.strip()  # "00:00:00": just started
        secs = 0.0 if zero else float(checks.walltime(elapsed, "elapsed"))
    else:
        secs = checks.duration(elapsed, "elapsed")
    return round(b * secs / 3600, 12)


def su_cost(pricing: Pricing, units: float) -> float:
    """Service units in money at ``pricing.su_price``.

    Examples
    --------
    >>> su_cost(Pricing(su_price=0.02), 150)
    3.0
    """
    return round(check_pricing(pricing).su_price * checks.number(units, "units", minimum=0), 12)
