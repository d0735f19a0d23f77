"""Partner answers: a partner system accepts, declines or completes a referral on its own outbox topic."""

from __future__ import annotations

import asyncpg

from contracts import Envelope, topics
from contracts.events import ReferralAccepted, ReferralAnswer, ReferralCompleted, ReferralDeclined
from lotse_kit.consumer import Rejected, current_delivery

from ..adapters import repository as repo
from ..domain.referrals import Action, Answer, IllegalTransition, NotAllowed
from .deps import Deps
from .referrals import apply_referral_action

ACTIONS = {
    "lotse.referral.accepted": Action.ACCEPT,
    "lotse.referral.declined": Action.DECLINE,
    "lotse.referral.completed": Action.COMPLETE,
}


async def record_partner_answer(env: Envelope[ReferralAnswer], conn: asyncpg.Connection, deps: Deps) -> None:
    """The same transition as the HTTP answer, re-published on lotse.referrals.v1; anything not allowed is dead-lettered."""
    action = ACTIONS[env.type]
    partner = env.source_partner
    data = env.data
    if partner is None:
        raise Rejected(f"answers on partner topics must come from /partners/<org>, not {env.source}")
    # ce_source is self-declared: it must name the owner of the outbox the answer arrived on.
    topic = current_delivery().topic
    owner = topics.partner_of(deps.naming.logical(topic))
    if owner != partner:
        raise Rejected(f"an answer from /partners/{partner} arrived on {topic}, not on {topics.partner_outbox(partner)}")
    if data.to_org != partner:
        raise Rejected(f"{partner} cannot answer in the name of {data.to_org}")
    ref = await repo.get_referral_to_answer(conn, data.referral_id)  # with what the answer needs of its client
    if ref is None:
        raise Rejected(f"unknown referral {data.referral_id}")
    if ref["client_id"] != data.client_id:
        raise Rejected(f"referral {data.referral_id} is not about client {data.client_id}")
    if ref["to_org"] != partner:
        raise Rejected(f"only the receiving organisation {ref['to_org']} may {action.value} referral {data.referral_id}, not {partner}")
    if isinstance(data, ReferralAccepted):
        answer = Answer(action, data.accepted_at, appointment_at=data.appointment_at)
    elif isinstance(data, ReferralDeclined):
        answer = Answer(action, data.declined_at, decline_reason=data.reason, decline_text=data.reason_text)
    elif isinstance(data, ReferralCompleted):
        answer = Answer(action, data.completed_at, outcome=data.outcome)
    else:
        raise Rejected(f"not a referral answer: {env.type}")
    try:
        await apply_referral_action(conn, deps, ref, answer, partner)
    except (NotAllowed, IllegalTransition) as exc:  # permanent refusals: dead-lettered with the reason
        raise Rejected(str(exc)) from exc
