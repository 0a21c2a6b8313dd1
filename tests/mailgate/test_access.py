"""Who may read and post: the one decision (PRIV-01), as a full table.

Every cell of visibility × posting policy × who-is-asking is written out, so a change to
the rules shows up as a failing row, not a silent widening.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailgate.access import ListFacts, Verdict, Viewer, is_privileged, may_post, may_read
from mailgate.models import PostingPolicy, Role, Visibility

WHO = {
    "stranger": Viewer(person_id=None),
    "inactive-member": Viewer(1, active=False, role=Role.MEMBER),
    "employee": Viewer(2, active=True),
    "member": Viewer(3, active=True, role=Role.MEMBER),
    "moderator": Viewer(4, active=True, role=Role.MODERATOR),
    "owner": Viewer(5, active=True, role=Role.OWNER),
    "allowed-poster": Viewer(6, active=True, role=Role.MEMBER, allowed_poster=True),
}
MEMBERS = {"member", "moderator", "owner", "allowed-poster"}


def facts(
    visibility: Visibility,
    posting: PostingPolicy = PostingPolicy.MEMBERS,
    mandatory: bool = False,
    archived: bool = False,
) -> ListFacts:
    return ListFacts(1, visibility, posting, mandatory, archived)


@pytest.mark.parametrize(("visibility", "who"), list(itertools.product(Visibility, WHO)))
def test_read_matrix(visibility: Visibility, who: str) -> None:
    expected = (
        who != "stranger"
        and who != "inactive-member"
        and (visibility is Visibility.COMPANY or who in MEMBERS)
    )
    assert may_read(facts(visibility), WHO[who]) is expected


POST_TABLE = {
    # (visibility, posting): the askers who may post (authenticated)
    ("company", "members"): MEMBERS,
    ("company", "company"): MEMBERS | {"employee"},
    ("company", "announce"): {"moderator", "owner", "allowed-poster"},
    ("members", "members"): MEMBERS,
    ("members", "company"): MEMBERS,  # you may not post where you cannot read
    ("members", "announce"): {"moderator", "owner", "allowed-poster"},
    ("hidden", "members"): MEMBERS,
    ("hidden", "company"): MEMBERS,
    ("hidden", "announce"): {"moderator", "owner", "allowed-poster"},
}


@pytest.mark.parametrize(
    ("visibility", "posting", "who"), list(itertools.product(Visibility, PostingPolicy, WHO))
)
def test_post_matrix(visibility: Visibility, posting: PostingPolicy, who: str) -> None:
    decision = may_post(facts(visibility, posting), WHO[who], authenticated=True)
    allowed = who in POST_TABLE[(str(visibility), str(posting))]
    assert (decision.verdict is Verdict.ALLOW) is allowed, decision


@pytest.mark.parametrize("who", sorted(MEMBERS))
def test_privileged_lists_hold_unauthenticated_posts(who: str) -> None:
    announce = facts(Visibility.COMPANY, PostingPolicy.ANNOUNCE)
    mandatory = facts(Visibility.COMPANY, PostingPolicy.MEMBERS, mandatory=True)
    for list_facts in (announce, mandatory):
        assert is_privileged(list_facts)
        decision = may_post(list_facts, WHO[who], authenticated=False)
        if may_post(list_facts, WHO[who], authenticated=True).verdict is Verdict.ALLOW:
            assert (decision.verdict, decision.reason) == (Verdict.HOLD, "held-for-authentication")
        else:
            assert decision.verdict is Verdict.REFUSE


def test_archived_lists_take_nothing() -> None:
    archived = facts(Visibility.COMPANY, PostingPolicy.COMPANY, archived=True)
    for viewer in WHO.values():
        assert may_post(archived, viewer, authenticated=True).reason in {"list-archived"}


@given(
    st.sampled_from(list(Visibility)),
    st.sampled_from(list(PostingPolicy)),
    st.booleans(),
    st.sampled_from(list(WHO)),
    st.booleans(),
)
def test_whoever_may_post_may_read(visibility, posting, mandatory, who, authenticated) -> None:  # type: ignore[no-untyped-def]
    """Safety property: a post is never allowed from someone who could not read the list
    (their replies would come back to them)."""
    list_facts = facts(visibility, posting, mandatory)
    if may_post(list_facts, WHO[who], authenticated=authenticated).verdict is not Verdict.REFUSE:
        assert may_read(list_facts, WHO[who])
