"""No secret and no user text in the logs."""

from __future__ import annotations

import io
import logging

import pytest
from sqlalchemy.exc import IntegrityError

from grimbots.logs import json_handler
from grimbots.models import Bot
from tests.factories import make_seller


def test_a_failed_jobs_arguments_never_reach_the_log():
    stream = io.StringIO()
    logger = logging.getLogger("grimbots.test_logs")
    logger.addHandler(json_handler(stream))
    logger.propagate = False
    update = {"message": {"text": "meu cpf é 123.456.789-00"}}
    # What RQ's worker logs on a job failure: the job's arguments as extra fields.
    logger.error(
        "job %s failed",
        "j1",
        extra={"func": "grimbots.jobs.process_update", "arguments": [1, update]},
    )
    line = stream.getvalue()
    assert "j1" in line and "process_update" in line
    assert "123.456.789-00" not in line


def test_database_errors_do_not_carry_bound_values(db):
    with db.session() as session:
        seller, _ = make_seller(session)
    bot = {"seller_id": seller.id, "username": "same_bot", "webhook_secret": "s"}
    with db.session() as session:
        session.add(Bot(token="111:FIRST-SECRET-TOKEN", **bot))
    with pytest.raises(IntegrityError) as caught, db.session() as session:
        session.add(Bot(token="222:SECOND-SECRET-TOKEN", **bot))
    assert "SECRET-TOKEN" not in str(caught.value)
