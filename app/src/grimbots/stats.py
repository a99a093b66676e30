"""Sales stats per bot and per redirect pool: clicks, leads, sales, revenue, by UTM.

Read-only aggregate queries, meant for a read session (a standby when one is configured), so
sellers refreshing dashboards never load the primary. Callers check ownership first.

Attribution: a bot's numbers are everything that happened on the bot; a pool's numbers are the
clicks on the pool and the leads that came in through those clicks (lead.click_token), with the
sales of those leads. Breakdowns use the click's UTM for clicks and the lead's copied UTM for
leads and sales.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grimbots.models import Click, Lead, Payment


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _summary(clicks: int, leads: int, sales: int, revenue: int) -> dict[str, Any]:
    return {
        "clicks": clicks,
        "leads": leads,
        "sales": sales,
        "revenue_cents": revenue,
        # Share of leads that bought, and of clicks that became leads.
        "conversion_rate": _rate(sales, leads),
        "click_to_lead_rate": _rate(leads, clicks),
    }


def _collect(session: Session, click_where: list, lead_where: list, lead_join=None):
    """Totals and the per-(utm_source, utm_campaign) breakdown for the given filters."""
    rows: dict[tuple[str | None, str | None], list[int]] = {}

    def bucket(source, campaign) -> list[int]:
        return rows.setdefault((source, campaign), [0, 0, 0, 0])

    click_q = (
        select(Click.utm_source, Click.utm_campaign, func.count())
        .where(*click_where)
        .group_by(Click.utm_source, Click.utm_campaign)
    )
    for source, campaign, count in session.execute(click_q):
        bucket(source, campaign)[0] += count

    lead_q = select(Lead.utm_source, Lead.utm_campaign, func.count()).select_from(Lead)
    if lead_join is not None:
        lead_q = lead_q.join(*lead_join)
    lead_q = lead_q.where(*lead_where).group_by(Lead.utm_source, Lead.utm_campaign)
    for source, campaign, count in session.execute(lead_q):
        bucket(source, campaign)[1] += count

    sale_q = (
        select(
            Lead.utm_source,
            Lead.utm_campaign,
            func.count(Payment.id),
            func.coalesce(func.sum(Payment.amount_cents), 0),
        )
        .select_from(Payment)
        .join(Lead, Lead.id == Payment.lead_id)
    )
    if lead_join is not None:
        sale_q = sale_q.join(*lead_join)
    sale_q = sale_q.where(*lead_where, Payment.status == "paid").group_by(
        Lead.utm_source, Lead.utm_campaign
    )
    for source, campaign, count, revenue in session.execute(sale_q):
        entry = bucket(source, campaign)
        entry[2] += count
        entry[3] += int(revenue)

    totals = [sum(values[i] for values in rows.values()) for i in range(4)]
    breakdown = [
        {"utm_source": source, "utm_campaign": campaign, **_summary(*values)}
        for (source, campaign), values in sorted(
            rows.items(), key=lambda item: (-item[1][3], -item[1][0], str(item[0]))
        )
    ]
    return {**_summary(*totals), "by_utm": breakdown}


def bot_stats(session: Session, bot_id: int) -> dict[str, Any]:
    """Everything that happened on one bot."""
    stats = _collect(session, [Click.bot_id == bot_id], [Lead.bot_id == bot_id])
    return {"bot_id": bot_id, **stats}


def pool_stats(session: Session, pool_id: int) -> dict[str, Any]:
    """Clicks on a pool, and the leads (and their sales) those clicks brought."""
    stats = _collect(
        session,
        [Click.pool_id == pool_id],
        [Click.pool_id == pool_id],
        lead_join=(Click, Click.token == Lead.click_token),
    )
    return {"pool_id": pool_id, **stats}
