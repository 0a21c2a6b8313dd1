"""The ``mailgate`` admin CLI: a composition root.

Input: command-line arguments and the environment (through ``load_settings``). Output:
tables for people, JSON with ``--json`` on every read command, and on bad input a
non-zero exit with one line on stderr — never a traceback.

Heavy imports (SQLAlchemy, aiosmtpd, Celery) happen inside commands so that
``mailgate inspect`` and ``--help`` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mailgate import __version__

if TYPE_CHECKING:
    pass


from mailgate.cli_app import (
    App,
    CLIError,
    actor,
    emit_json,
    json_option,
    pass_app,
    print_table,
)

# ------------------------------------------------------------------------ root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="mailgate")
def cli() -> None:
    """Mailgate: email-first discussion lists. Admin commands."""


@cli.command("config")
@json_option
@pass_app
def config_cmd(app: App, as_json: bool) -> None:
    """Print the effective settings, secrets masked, and whose Authentication-Results
    count."""
    shown = app.settings.masked()
    trust = app.settings.authres_trust()
    if as_json:
        emit_json(
            {
                **shown,
                "authentication_results": trust,
                "company": app.settings.company_scope(),
                "unsubscribe_links": app.settings.unsubscribe_links(),
                "one_click_unsubscribe": app.settings.one_click,
            }
        )
        return
    print_table("Mailgate settings", ["setting", "value"], [[k, v] for k, v in shown.items()])
    click.echo(f"Authentication-Results: {trust}")
    click.echo(f"Unsubscribe links: {app.settings.unsubscribe_links()}")
    click.echo(f"Company: {app.settings.company_scope()}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create or migrate the schema to the newest revision."""
    from mailgate.db import upgrade_database

    upgrade_database(app.settings.database_url)
    click.echo("database is at the newest revision")


@cli.command("status")
@json_option
@pass_app
def status_cmd(app: App, as_json: bool) -> None:
    """Schema revision and what the database holds."""
    from mailgate.status import gather_status

    with app.session() as session:
        status = gather_status(session, app.settings)
    if as_json:
        emit_json(status)
        return
    print_table("Mailgate status", ["item", "value"], [[k, v] for k, v in status.items()])


# ------------------------------------------------------------------------ lists

visibility_option = click.option(
    "--visibility", type=click.Choice(["company", "members", "hidden"]), help="Who may read."
)
posting_option = click.option(
    "--posting", type=click.Choice(["members", "company", "announce"]), help="Who may post."
)


@cli.group()
def lists() -> None:
    """Create, show, change and archive lists."""


@lists.command("create")
@click.argument("slug")
@click.option("--name", help="Display name, e.g. 'Engineering'.")
@click.option("--description", default="", help="One line about the list.")
@visibility_option
@posting_option
@click.option("--mandatory/--optional", default=False, help="Members cannot leave (LIST-06).")
@pass_app
def lists_create(
    app: App,
    slug: str,
    name: str | None,
    description: str,
    visibility: str | None,
    posting: str | None,
    mandatory: bool,
) -> None:
    """Create list SLUG (its address is SLUG@DOMAIN)."""
    from mailgate import directory

    with app.session() as session:
        ml = directory.create_list(
            session,
            actor(),
            slug,
            name=name,
            description=description,
            visibility=visibility or "company",
            posting=posting or "members",
            mandatory=mandatory,
        )
        click.echo(f"created list {ml.slug} <{ml.slug}@{app.settings.domain}>")


@lists.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived lists.")
@json_option
@pass_app
def lists_list(app: App, include_archived: bool, as_json: bool) -> None:
    """All lists with their policies and member counts."""
    from mailgate import directory

    with app.session() as session:
        counts = directory.member_counts(session)
        rows = [
            {**directory.list_snapshot(ml), "members": counts.get(ml.id, 0)}
            for ml in directory.all_lists(session, include_archived=include_archived)
        ]
    if as_json:
        emit_json(rows)
        return
    columns = ["slug", "name", "visibility", "posting", "mandatory", "archived", "members"]
    print_table("Lists", columns, [[r[c] for c in columns] for r in rows])


@lists.command("show")
@click.argument("slug")
@json_option
@pass_app
def lists_show(app: App, slug: str, as_json: bool) -> None:
    """One list's settings and owners."""
    from mailgate import directory

    with app.session() as session:
        ml = directory.get_list(session, slug)
        members = directory.list_members(session, slug)
        data = {
            **directory.list_snapshot(ml),
            "address": f"{ml.slug}@{app.settings.domain}",
            "members": len(members),
            "owners": [m.person.primary_address for m in members if m.role == "owner"],
            "moderators": [m.person.primary_address for m in members if m.role == "moderator"],
        }
    if as_json:
        emit_json(data)
        return
    print_table(f"List {data['slug']}", ["field", "value"], [[k, v] for k, v in data.items()])


@lists.command("update")
@click.argument("slug")
@click.option("--name")
@click.option("--description")
@visibility_option
@posting_option
@click.option("--mandatory/--optional", default=None)
@pass_app
def lists_update(app: App, slug: str, **changes: Any) -> None:
    """Change a list's name, description or policies."""
    from mailgate import directory

    with app.session() as session:
        ml = directory.update_list(session, actor(), slug, **changes)
        click.echo(f"updated list {ml.slug}")


@lists.command("archive")
@click.argument("slug")
@pass_app
def lists_archive(app: App, slug: str) -> None:
    """Archive a list: it stops taking mail; its history stays."""
    from mailgate import directory

    with app.session() as session:
        directory.archive_list(session, actor(), slug)
        click.echo(f"archived list {slug}")


# ------------------------------------------------------------------------ members

delivery_option = click.option(
    "--delivery", type=click.Choice(["every", "digest", "none"]), help="How mail arrives."
)
role_option = click.option(
    "--role", type=click.Choice(["owner", "moderator", "member"]), help="Role in the list."
)


@cli.group()
def members() -> None:
    """Add, remove, change, import and export members."""


@members.command("add")
@click.argument("slug")
@click.argument("email")
@click.option("--name")
@click.option("--timezone", help="IANA zone, e.g. Europe/Berlin.")
@click.option("--department")
@role_option
@delivery_option
@pass_app
def members_add(
    app: App,
    slug: str,
    email: str,
    name: str | None,
    timezone: str | None,
    department: str | None,
    role: str | None,
    delivery: str | None,
) -> None:
    """Add EMAIL to list SLUG (creating the person if needed)."""
    from mailgate import directory

    with app.session() as session:
        m = directory.add_member(
            session,
            actor(),
            slug,
            email,
            name=name,
            timezone=timezone,
            department=department,
            role=role or "member",
            delivery=delivery or "every",
        )
        click.echo(f"added {m.person.primary_address} to {slug} ({m.role}, {m.delivery})")


@members.command("remove")
@click.argument("slug")
@click.argument("email")
@pass_app
def members_remove(app: App, slug: str, email: str) -> None:
    """Remove EMAIL from list SLUG."""
    from mailgate import directory

    with app.session() as session:
        directory.remove_member(session, actor(), slug, email)
        click.echo(f"removed {email.strip().lower()} from {slug}")


@members.command("set")
@click.argument("slug")
@click.argument("email")
@delivery_option
@role_option
@pass_app
def members_set(app: App, slug: str, email: str, delivery: str | None, role: str | None) -> None:
    """Change EMAIL's delivery mode or role in list SLUG."""
    from mailgate import directory

    with app.session() as session:
        m = directory.set_member(session, actor(), slug, email, delivery=delivery, role=role)
        click.echo(f"{m.person.primary_address} in {slug}: {m.role}, {m.delivery}")


@members.command("show")
@click.argument("slug")
@click.argument("email", required=False)
@json_option
@pass_app
def members_show(app: App, slug: str, email: str | None, as_json: bool) -> None:
    """List SLUG's members, or one member's details with EMAIL."""
    from mailgate import directory

    with app.session() as session:
        if email is None:
            rows = [
                {
                    "email": m.person.primary_address,
                    "name": m.person.name,
                    "timezone": m.person.timezone,
                    "department": m.person.department,
                    "role": str(m.role),
                    "delivery": str(m.delivery),
                }
                for m in directory.list_members(session, slug)
            ]
            if as_json:
                emit_json(rows)
                return
            columns = ["email", "name", "timezone", "department", "role", "delivery"]
            print_table(f"Members of {slug}", columns, [[r[c] for c in columns] for r in rows])
            return
        ml = directory.get_list(session, slug)
        person = directory.get_person(session, email)
        membership = directory.get_membership(session, ml, person)
        if membership is None:
            raise directory.DirectoryError(f"{email.strip()} is not a member of {ml.slug!r}")
        data = {
            **directory.person_snapshot(person),
            **directory.membership_snapshot(membership),
            "list": ml.slug,
            "site_roles": directory.site_roles(session, person),
        }
    if as_json:
        emit_json(data)
        return
    print_table(f"{email} in {slug}", ["field", "value"], [[k, v] for k, v in data.items()])


@members.command("import")
@click.argument("slug")
@click.argument("csv_file", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@pass_app
def members_import(app: App, slug: str, csv_file: str, as_json: bool) -> None:
    """Import members of SLUG from CSV (header: email,name,timezone,department).

    Idempotent: running it again changes nothing. Bad rows are skipped with a reason.
    """
    from rich.progress import Progress

    from mailgate import directory

    text = _read_text(csv_file)
    rows, skipped = directory.read_import_rows(text)
    with app.session() as session:
        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task(f"importing into {slug}", total=len(rows))
            report = directory.import_members(
                session, actor(), slug, rows, progress=lambda n: bar.advance(task, n)
            )
        report.skipped = skipped + report.skipped
        directory.finish_import(session, actor(), slug, report)
    if as_json:
        emit_json(report.as_dict())
        return
    click.echo(
        f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {len(report.skipped)}"
    )
    for line, reason in report.skipped:
        click.echo(f"  line {line}: {reason}")


def _read_text(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not UTF-8 text") from None


@members.command("export")
@click.argument("slug")
@pass_app
def members_export(app: App, slug: str) -> None:
    """Write SLUG's members as CSV to stdout."""
    from mailgate import directory

    with app.session() as session:
        click.echo(directory.export_members_csv(session, slug), nl=False)


# ------------------------------------------------------------------------ people


@cli.group()
def people() -> None:
    """People in the directory."""


@people.command("add")
@click.argument("email")
@click.option("--name")
@click.option("--timezone", help="IANA zone, e.g. Europe/Berlin (default UTC).")
@click.option("--department")
@pass_app
def people_add(
    app: App, email: str, name: str | None, timezone: str | None, department: str | None
) -> None:
    """Add EMAIL to the directory without a list (e.g. to grant a site role)."""
    from mailgate import directory

    with app.session() as session:
        person = directory.add_person(
            session, actor(), email, name=name, timezone=timezone, department=department
        )
        shown = f" ({person.name})" if person.name else ""
        click.echo(f"added {person.primary_address}{shown}")


@people.command("show")
@click.argument("email")
@json_option
@pass_app
def people_show(app: App, email: str, as_json: bool) -> None:
    """A person's details, roles and memberships."""
    from mailgate import directory

    with app.session() as session:
        person = directory.get_person(session, email)
        data = {
            **directory.person_snapshot(person),
            "site_roles": directory.site_roles(session, person),
            "memberships": [
                {"list": m.mailing_list.slug, **directory.membership_snapshot(m)}
                for m in directory.memberships_of(session, person)
            ],
        }
    if as_json:
        emit_json(data)
        return
    print_table(person.name or email, ["field", "value"], [[k, v] for k, v in data.items()])


@people.command("update")
@click.argument("email")
@click.option("--name")
@click.option("--timezone")
@click.option("--department")
@click.option("--add-address", help="Another address that belongs to this person.")
@click.option(
    "--self-copy/--no-self-copy", default=None, help="Whether they get copies of their own posts."
)
@click.option("--digest-hour", type=click.IntRange(0, 23), help="Local hour of their digest.")
@click.option("--weekdays-only/--every-day", default=None, help="Digest on weekdays only.")
@click.option(
    "--daily-summary/--no-daily-summary", default=None, help="A digest even without digest lists."
)
@pass_app
def people_update(
    app: App,
    email: str,
    name: str | None,
    timezone: str | None,
    department: str | None,
    add_address: str | None,
    self_copy: bool | None,
    digest_hour: int | None,
    weekdays_only: bool | None,
    daily_summary: bool | None,
) -> None:
    """Change a person's name, timezone, department or preferences, or add an address."""
    from mailgate import directory

    with app.session() as session:
        directory.get_person(session, email)
        directory.ensure_person(
            session,
            actor(),
            email,
            name=name,
            timezone=timezone,
            department=department,
            self_copy=self_copy,
            digest_hour=digest_hour,
            weekdays_only=weekdays_only,
            daily_summary=daily_summary,
        )
        if add_address:
            directory.add_address(session, actor(), email, add_address)
    click.echo(f"updated {email.strip().lower()}")


@people.command("export")
@click.argument("email")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write <email>.json and <email>.mbox here (default: the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document to stdout.")
@pass_app
def people_export(app: App, email: str, out_dir: str | None, as_json: bool) -> None:
    """Everything held about a person (PRIV-04): JSON plus an mbox of the mail they sent."""
    from mailgate import privacy

    with app.session() as session:
        export = privacy.export_person(session, email)
    if as_json:
        emit_json(export.document)
    if out_dir is None and as_json:
        return
    json_path, mbox_path = privacy.write_export(export, Path(out_dir or "."))
    # With --json, stdout stays pure JSON; the paths go to stderr.
    click.echo(f"wrote {json_path}", err=as_json)
    click.echo(f"wrote {mbox_path} ({len(export.messages)} messages)", err=as_json)


@people.command("erase")
@click.argument("email")
@click.option(
    "--delete-posts",
    is_flag=True,
    help="Replace their posts' text with [removed] (default: keep it, as a former member).",
)
@click.option("--yes", is_flag=True, help="Really erase; without it, only show what would go.")
@json_option
@pass_app
def people_erase(app: App, email: str, delete_posts: bool, yes: bool, as_json: bool) -> None:
    """Erase a person (PRIV-05): addresses, memberships, deliveries, raw mail; posts anonymised."""
    from mailgate import privacy

    with app.session() as session:
        erasure = privacy.erase_person(
            session, actor(), email, delete_posts=delete_posts, apply=yes
        )
    if as_json:
        emit_json(erasure.as_dict())
    else:
        verb = "erased" if yes else "would erase"
        rows = [[k, v] for k, v in erasure.counts.items()]
        print_table(f"{verb} {email.strip().lower()} → {erasure.label}", ["what", "rows"], rows)
    if not yes:
        raise CLIError("nothing erased: run again with --yes to erase")


# ------------------------------------------------------------------------ roles


@cli.group()
def roles() -> None:
    """Site roles (admin, executive) and list roles (owner, moderator, poster)."""


@roles.command("grant")
@click.argument("email")
@click.argument("role")
@click.option("--list", "slug", help="Grant a list role (owner, moderator, poster) on this list.")
@pass_app
def roles_grant(app: App, email: str, role: str, slug: str | None) -> None:
    """Grant ROLE to EMAIL."""
    from mailgate import directory

    with app.session() as session:
        directory.grant_role(session, actor(), email, role, slug)
    click.echo(f"granted {role} to {email.strip().lower()}" + (f" on {slug}" if slug else ""))


@roles.command("revoke")
@click.argument("email")
@click.argument("role")
@click.option("--list", "slug", help="Revoke a list role on this list.")
@pass_app
def roles_revoke(app: App, email: str, role: str, slug: str | None) -> None:
    """Revoke ROLE from EMAIL."""
    from mailgate import directory

    with app.session() as session:
        directory.revoke_role(session, actor(), email, role, slug)
    click.echo(f"revoked {role} from {email.strip().lower()}" + (f" on {slug}" if slug else ""))


@roles.command("list")
@click.option("--list", "slug", help="Only this list's roles.")
@json_option
@pass_app
def roles_list(app: App, slug: str | None, as_json: bool) -> None:
    """Who holds which role: site roles (admin, executive), then list roles (owner,
    moderator, poster) per list."""
    from mailgate import directory

    with app.session() as session:
        rows = [
            {"scope": h.scope, "role": h.role, "email": h.email, "name": h.name}
            for h in directory.role_holders(session, slug=slug)
        ]
    if as_json:
        emit_json(rows)
        return
    columns = ["scope", "role", "email", "name"]
    print_table("Roles", columns, [[r[c] for c in columns] for r in rows])


# ------------------------------------------------------------------------ audit


@cli.command("audit")
@click.option(
    "--target",
    help="Only entries about this target and what is under it: list:eng also shows its "
    "members' and roles' changes (list:eng/alice@corp.example), person:EMAIL one person's.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def audit_cmd(app: App, target: str | None, limit: int, as_json: bool) -> None:
    """The audit trail, newest first."""
    from mailgate import directory

    with app.session() as session:
        rows = [
            {
                "id": e.id,
                "at": e.at.isoformat(timespec="seconds"),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "before": e.before,
                "after": e.after,
            }
            for e in directory.audit_entries(session, limit=limit, target=target)
        ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        "Audit log",
        ["at", "actor", "action", "target", "change"],
        [[r["at"], r["actor"], r["action"], r["target"], describe_change(r)] for r in rows],
    )


def describe_change(entry: dict[str, Any]) -> str:
    """``field: old → new`` for each changed field (the JSON view has everything)."""
    before, after = entry["before"] or {}, entry["after"] or {}
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            parts.append(f"{key}: {old if key in before else '∅'} → {new if key in after else '∅'}")
    return "; ".join(parts)


# ------------------------------------------------------------------------ bounces


@cli.group()
def bounces() -> None:
    """Bounce scores and suspended delivery (BNC-03)."""


def _bounce_row(state: Any, person: Any) -> dict[str, Any]:
    return {
        "email": person.primary_address,
        "name": person.name,
        "score": round(state.score, 2),
        "bounces": state.bounces,
        "suspended": state.suspended_at is not None,
        "suspended_at": state.suspended_at.isoformat(timespec="seconds")
        if state.suspended_at
        else None,
        "last_bounce": state.updated_at.isoformat(timespec="seconds") if state.updated_at else None,
        "last_diagnostic": state.last_diagnostic,
    }


@bounces.command("list")
@click.option("--suspended", is_flag=True, help="Only people whose delivery is suspended.")
@json_option
@pass_app
def bounces_list(app: App, suspended: bool, as_json: bool) -> None:
    """People with a bounce score, highest first."""
    from mailgate.bounces import suspended_people

    with app.session() as session:
        rows = [
            _bounce_row(state, person)
            for state, person in suspended_people(session)
            if not suspended or state.suspended_at is not None
        ]
    if as_json:
        emit_json(rows)
        return
    columns = ["email", "name", "score", "bounces", "suspended", "last_bounce"]
    print_table("Bounces", columns, [[r[c] for c in columns] for r in rows])


@bounces.command("show")
@click.argument("email")
@json_option
@pass_app
def bounces_show(app: App, email: str, as_json: bool) -> None:
    """One person's bounce score, suspension and lists."""
    from sqlalchemy import select

    from mailgate import directory
    from mailgate.bounces import lists_of
    from mailgate.models import BounceState

    with app.session() as session:
        person = directory.get_person(session, email)
        state = session.scalar(select(BounceState).where(BounceState.person_id == person.id))
        data = (
            _bounce_row(state, person)
            if state
            else {"email": person.primary_address, "score": 0, "suspended": False, "bounces": 0}
        )
        data["lists"] = lists_of(session, person.id)
    if as_json:
        emit_json(data)
        return
    print_table(f"Bounces of {email}", ["field", "value"], [[k, v] for k, v in data.items()])


@bounces.command("reset")
@click.argument("email")
@pass_app
def bounces_reset(app: App, email: str) -> None:
    """Clear a person's bounce score and resume their delivery."""
    from mailgate import directory
    from mailgate.bounces import reset_bounces

    with app.session() as session:
        person = directory.get_person(session, email)
        before = reset_bounces(session, person)
        if before is None:
            raise CLIError(f"{person.primary_address} has no bounces to reset")
        directory.record(
            session,
            actor(),
            "bounces.reset",
            f"person:{person.primary_address}",
            before,
            {"score": 0.0, "suspended": False},
        )
    click.echo(f"reset bounces of {email.strip().lower()}; delivery resumed")


# ------------------------------------------------------------------------ digests


@cli.group()
def digest() -> None:
    """Daily digests: preview one member's, or run the scheduler step by hand."""


@digest.command("preview")
@click.argument("email")
@click.option("--date", "day", help="Local date (YYYY-MM-DD); default: the member's today.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Write the HTML here.")
@json_option
@pass_app
def digest_preview(
    app: App, email: str, day: str | None, html_file: str | None, as_json: bool
) -> None:
    """The plan for EMAIL's digest: each item, why it was chosen, and what was left out."""
    import datetime as dt
    import zoneinfo

    from digests.sending import DigestMail, compose_for, preview
    from mailgate import directory
    from mailgate.models import utcnow

    now = utcnow()
    with app.session() as session:
        person = directory.get_person(session, email)
        try:
            zone = zoneinfo.ZoneInfo(person.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = zoneinfo.ZoneInfo("UTC")
        try:
            local = dt.date.fromisoformat(day) if day else now.astimezone(zone).date()
        except ValueError:
            raise CLIError(f"invalid --date {day!r}: use YYYY-MM-DD") from None
        plan, row = preview(session, person.id, local, now)
        if html_file:
            settings = app.settings
            mail = DigestMail(
                settings.domain, settings.secret_key, settings.base_url, settings.company_name
            )
            raw = compose_for(plan, row, mail, (person.primary_address, person.name), None)
            Path(html_file).write_text(html_part(raw), encoding="utf-8")
    items = [
        {
            "number": n,
            "kind": i.kind,
            "list": i.list_slug,
            "subject": i.subject,
            "replies": i.replies,
            "reason": i.reason,
        }
        for n, i in enumerate(plan.items, 1)
    ]
    data: dict[str, Any] = {
        "member": person.primary_address,
        "local_date": plan.local_date.isoformat(),
        "worth_sending": plan.worth_sending,
        "items": items,
        "others": plan.others,
        "left_out": [{"discussion": d, "reason": r} for d, r in plan.left_out],
    }
    if as_json:
        emit_json(data)
        return
    print_table(
        f"Digest for {data['member']} on {data['local_date']}",
        ["#", "kind", "list", "subject", "why"],
        [[x["number"], x["kind"], x["list"], x["subject"], x["reason"]] for x in items],
    )
    click.echo(
        f"and {plan.others} more; left out: "
        + (", ".join(f"{d}: {r}" for d, r in plan.left_out) or "nothing")
    )
    if not plan.worth_sending:
        click.echo("nothing worth reading: no digest would be sent")


def html_part(raw: bytes) -> str:
    from email import message_from_bytes, policy
    from email.message import EmailMessage

    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("html",))
    return str(body.get_content()) if body is not None else ""


@digest.command("send-due")
@click.option(
    "--now",
    "at",
    help="Run the step for this ISO instant, e.g. 2026-12-08T07:05+01:00 (default: now). "
    "Members whose digest hour has come by then get that day's digest, covering mail up "
    "to that instant, and it counts as that day's digest.",
)
@pass_app
def digest_send_due(app: App, at: str | None) -> None:
    """Run the scheduler step now: queue the digests that are due."""
    import datetime as dt

    from worker.tasks import publish_due_digests

    instant = None
    if at:
        try:
            instant = dt.datetime.fromisoformat(at)
        except ValueError:
            raise CLIError(
                f"invalid --now {at!r}: use an ISO time like 2026-12-01T09:30Z"
            ) from None
        if instant.tzinfo is None:
            raise CLIError("--now needs a timezone, e.g. 2026-12-01T09:30+00:00")
    click.echo(f"queued digests for {publish_due_digests(instant)} member(s)")


# ------------------------------------------------------------------------ processes


@cli.command("serve")
@pass_app
def serve_cmd(app: App) -> None:
    """Run the SMTP gateway (the Procfile's smtp process)."""
    from mailgate.processes import serve

    serve(app.settings)


@cli.command("worker")
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--queues",
    default="ingest,fanout,outbound,questions,digests,notices,maintenance",
    show_default=True,
)
@click.option("--loglevel", default="INFO", show_default=True)
@pass_app
def worker_cmd(app: App, concurrency: int, queues: str, loglevel: str) -> None:
    """Run a Celery worker (the Procfile's worker process)."""
    from mailgate.processes import worker

    worker(app.settings, concurrency, queues, loglevel)


@cli.command("beat")
@click.option("--loglevel", default="INFO", show_default=True)
@pass_app
def beat_cmd(app: App, loglevel: str) -> None:
    """Run the scheduler: the sweeper now, digests and prompts later. Run exactly one."""
    from mailgate.processes import beat

    beat(app.settings, loglevel)


@cli.command("run")
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64))
@pass_app
def run_cmd(app: App, concurrency: int) -> None:
    """Migrate the database, show the status, and run gateway, worker and scheduler."""
    from mailgate.db import upgrade_database
    from mailgate.processes import run_all
    from mailgate.status import gather_status

    upgrade_database(app.settings.database_url)
    with app.session() as session:
        status = gather_status(session, app.settings)
    print_table("Mailgate", ["item", "value"], [[k, v] for k, v in status.items()])
    raise SystemExit(run_all(app.settings, concurrency=concurrency))


@cli.command("sweep")
@json_option
def sweep_cmd(as_json: bool) -> None:
    """Run the sweeper once now: re-queue stored work the broker does not have."""
    from worker.tasks import sweep_once

    counts = sweep_once()
    if as_json:
        emit_json(counts)
        return
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))


# ------------------------------------------------------------------------ inspect


@cli.command("inspect")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--mail-from",
    default=None,
    help="Envelope sender to assume ('' = null sender); default: Return-Path, else From.",
)
@json_option
def inspect_cmd(source: str, mail_from: str | None, as_json: bool) -> None:
    """Classify one raw message and show its new text, without storing anything.

    SOURCE is a file or - for stdin. Prints JSON (with or without --json). Needs no
    database or server.
    """
    from mailgate.reading import inspect_message
    from mailgate.settings import domain_from_env

    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {source}: {exc.strerror}") from None
    emit_json(inspect_message(raw, domain=domain_from_env(), mail_from=mail_from))


# ------------------------------------------------------------------------ inbound


@cli.group()
def inbound() -> None:
    """Stored inbound mail: what was refused, held or failed, and why."""


def _anonymous(app: App, session: Any, rows: Any) -> set[int]:
    """Which of ``rows`` are anonymous answers, whose senders no routine command shows."""
    from mailgate.anonymity import anonymous_raw_ids

    settings = app.settings
    return anonymous_raw_ids(
        session, list(rows), domain=settings.domain, secrets=(settings.secret_key,)
    )


def _raw_summary(row: Any) -> dict[str, Any]:
    from mailgate.addressing import redact_address

    return {
        "id": row.id,
        "received_at": row.received_at.isoformat(timespec="seconds"),
        "status": str(row.status),
        "reason": row.reason,
        "mail_from": row.mail_from,
        "rcpt_to": [redact_address(r) for r in row.rcpt_to],
        "message_id": row.message_id,
        "size": len(row.raw),
        "attempts": row.attempts,
    }


@inbound.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(
        ["received", "processed", "rejected", "suppressed", "held", "discarded", "failed"]
    ),
    help="Only these statuses (default: everything not processed).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def inbound_list(app: App, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Recent inbound messages, newest first."""
    from sqlalchemy import select

    from mailgate.models import RawMessage, RawStatus

    wanted = [RawStatus(s) for s in statuses] or [
        s for s in RawStatus if s is not RawStatus.PROCESSED
    ]
    from mailgate.anonymity import redact_summary

    with app.session() as session:
        found = session.scalars(
            select(RawMessage)
            .where(RawMessage.status.in_(wanted))
            .order_by(RawMessage.id.desc())
            .limit(limit)
        ).all()
        hidden = _anonymous(app, session, found)
        rows = [
            redact_summary(_raw_summary(r)) if r.id in hidden else _raw_summary(r) for r in found
        ]
    if as_json:
        emit_json(rows)
        return
    columns = ["id", "received_at", "status", "reason", "mail_from", "rcpt_to"]
    print_table("Inbound", columns, [[r[c] for c in columns] for r in rows])


def _get_raw(session: Any, raw_id: int) -> Any:
    from mailgate.models import RawMessage

    row = session.get(RawMessage, raw_id)
    if row is None:
        raise CLIError(f"no inbound message {raw_id}")
    return row


@inbound.command("show")
@click.argument("raw_id", type=int)
@click.option("--raw", "show_raw", is_flag=True, help="Print the exact bytes received.")
@json_option
@pass_app
def inbound_show(app: App, raw_id: int, show_raw: bool, as_json: bool) -> None:
    """One stored message: envelope, status and reason (or its exact bytes)."""
    from mailgate.anonymity import redact_summary

    with app.session() as session:
        row = _get_raw(session, raw_id)
        anonymous = bool(_anonymous(app, session, [row]))
        if show_raw:
            if anonymous:
                raise CLIError(
                    f"inbound message {raw_id} is an anonymous answer; its bytes name the "
                    "author (a site admin may use inbound explain --reveal-anonymous)"
                )
            sys.stdout.buffer.write(row.raw)
            return
        data = {**_raw_summary(row), "sha256": row.sha256, "peer": row.peer, "helo": row.helo}
        if anonymous:
            data = redact_summary(data)  # no digest, peer or HELO either: a whitelist
    if as_json:
        emit_json(data)
        return
    print_table(f"Inbound {raw_id}", ["field", "value"], [[k, v] for k, v in data.items()])


@inbound.command("explain")
@click.argument("raw_id", type=int)
@click.option(
    "--reveal-anonymous",
    is_flag=True,
    help="Show who wrote an anonymous answer (site admins only; audited; needs --admin "
    "and --reason).",
)
@click.option("--admin", "admin_email", help="The site admin revealing (with --reveal-anonymous).")
@click.option("--reason", help="Why, for the audit log (with --reveal-anonymous).")
@json_option
@pass_app
def inbound_explain(
    app: App,
    raw_id: int,
    reveal_anonymous: bool,
    admin_email: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """How a stored message was classified, attributed and threaded, and why (always JSON;
    --json is accepted like on every read command).

    An anonymous answer is shown without its sender, Message-ID, question or post."""
    from mailgate.anonymity import redact_raw_view
    from mailgate.classify import OurAddresses
    from mailgate.reading import read_message

    reason = (reason or "").strip()
    if not reveal_anonymous and (admin_email or reason):
        raise CLIError("--admin and --reason go with --reveal-anonymous")
    if reveal_anonymous and not (admin_email and reason):
        raise CLIError("--reveal-anonymous needs --admin and --reason")
    with app.session() as session:
        row = _get_raw(session, raw_id)
        explanation = dict(row.explanation or {})
        if not explanation:
            ours = OurAddresses(app.settings.domain, frozenset(), f"mailgate@{app.settings.domain}")
            reading = read_message(row.raw, mail_from=row.mail_from, ours=ours)
            explanation = {"not_processed_yet": True, "reading": reading.as_dict()}
        data = {**_raw_summary(row), "explanation": explanation}
        anonymous = bool(_anonymous(app, session, [row]))
        if reveal_anonymous:
            if not anonymous:
                raise CLIError(f"inbound message {raw_id} is not an anonymous answer")
            _audit_reveal(session, raw_id, str(admin_email), reason)
        elif anonymous:
            data = redact_raw_view(_raw_summary(row), explanation)
    # Printed only once the transaction (with any audit row) has committed.
    emit_json(data)


def _audit_reveal(session: Any, raw_id: int, admin_email: str, reason: str) -> None:
    """The one way to learn who wrote an anonymous answer: a site admin, a reason, and an
    audit row naming both (never the person revealed; ``mailgate.anonymity``)."""
    from mailgate import directory
    from mailgate.models import SiteRole

    admin = directory.get_person(session, admin_email)
    if str(SiteRole.ADMIN) not in directory.site_roles(session, admin):
        raise CLIError(
            f"{admin.primary_address} is not a site admin; only a site admin may reveal an "
            "anonymous answer"
        )
    directory.record(
        session,
        actor(),
        "inbound.reveal-anonymous",
        f"inbound:{raw_id}",
        None,
        {"admin": admin.primary_address, "reason": reason},
    )


@inbound.command("release")
@click.argument("raw_id", type=int)
@pass_app
def inbound_release(app: App, raw_id: int) -> None:
    """Post a held message now (a moderator's decision)."""
    from mailgate.directory import record
    from mailgate.ingest import IngestContext, release_post
    from mailgate.models import RawStatus

    settings = app.settings
    ctx = IngestContext(domain=settings.domain, secrets=(settings.secret_key,))
    with app.session() as session:
        row = _get_raw(session, raw_id)
        if row.status is not RawStatus.HELD:
            raise CLIError(f"inbound message {raw_id} is {row.status}, not held")
        held_for = row.reason
        outcome = release_post(session, row, ctx)
        if row.status is not RawStatus.PROCESSED:
            # Only a held post can be released; a held command (a subscription awaiting
            # its confirmation) stays held. Raising rolls back what release_post changed.
            if outcome.reason == "not-a-post":
                raise CLIError(
                    f"inbound message {raw_id} is held for {held_for}, not a post; nothing released"
                )
            # Decided again per list, as a fresh post: refused on every list it names.
            raise CLIError(
                f"inbound message {raw_id} may not be posted to any list it names "
                f"({outcome.reason}); it stays held"
            )
        record(
            session,
            actor(),
            "inbound.release",
            f"inbound:{raw_id}",
            {"status": "held"},
            {"status": str(row.status), "reason": outcome.reason},
        )
    click.echo(f"released inbound message {raw_id}: {outcome.reason}")


@inbound.command("discard")
@click.argument("raw_id", type=int)
@pass_app
def inbound_discard(app: App, raw_id: int) -> None:
    """Throw away a held or failed message (its bytes stay for the retention period)."""
    from mailgate.directory import record
    from mailgate.models import RawStatus

    with app.session() as session:
        row = _get_raw(session, raw_id)
        if row.status is RawStatus.PROCESSED:
            raise CLIError(f"inbound message {raw_id} was posted; nothing to discard")
        before = {"status": str(row.status)}
        row.status, row.reason = RawStatus.DISCARDED, "discarded-by-admin"
        record(
            session,
            actor(),
            "inbound.discard",
            f"inbound:{raw_id}",
            before,
            {"status": "discarded"},
        )
    click.echo(f"discarded inbound message {raw_id}")


@inbound.command("replay")
@click.argument("raw_id", type=int)
@pass_app
def inbound_replay(app: App, raw_id: int) -> None:
    """Process a stored message again from its exact bytes (after a fix or a change)."""
    from mailgate.directory import record
    from mailgate.models import RawStatus

    with app.session() as session:
        row = _get_raw(session, raw_id)
        if row.status is RawStatus.PROCESSED:
            raise CLIError(f"inbound message {raw_id} was posted; replaying would add nothing")
        before = {"status": str(row.status), "reason": row.reason}
        row.status, row.reason, row.attempts, row.queued_at = RawStatus.RECEIVED, "", 0, None
        row.explanation = {}
        record(
            session, actor(), "inbound.replay", f"inbound:{raw_id}", before, {"status": "received"}
        )
    from worker.runtime import publish_ingest

    try:
        publish_ingest([raw_id])
    except Exception:  # noqa: BLE001 - the sweeper picks it up
        click.echo("broker unavailable; the sweeper will queue it", err=True)
    click.echo(f"queued inbound message {raw_id} for processing again")


# ------------------------------------------------------------------------ entry point


def _expected_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from mailgate.directory import DirectoryError
    from mailgate.settings import SettingsError

    return (DirectoryError, SettingsError, OperationalError, ProgrammingError)


def _one_line(exc: BaseException) -> str:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if isinstance(exc, OperationalError | ProgrammingError):
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        if "no such table" in first or "does not exist" in first:
            return f"database is not initialised ({first}); run: mailgate db upgrade"
        return f"database error: {first}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# Commands that live in their own modules (they import this one, so they come last).
from mailgate.cli_questions import ask_group, people_away, prompts_group  # noqa: E402
from mailgate.cli_stats import stats_command  # noqa: E402

cli.add_command(ask_group)
cli.add_command(prompts_group)
cli.add_command(stats_command)
people.add_command(people_away)


def main(argv: list[str] | None = None, *, entry: click.Group = cli) -> None:
    """Console-script entry: turn expected failures into one line and exit 1."""
    try:
        entry.main(args=argv, prog_name="mailgate", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - never a traceback on the terminal
        if not isinstance(exc, _expected_errors()):
            click.echo(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}", err=True)
            sys.exit(1)
        click.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
