"""Time rule evaluation per email at 10, 100, 1,000 and 10,000 rules.

Run it from the checkout::

    python benchmarks/bench_rules.py            # 2,000 real emails, 7 rounds
    python benchmarks/bench_rules.py --short    # 200 real emails, 3 rounds, 10 and 10,000 rules

Rule sets are random but shaped like real ones: rule i is of kind i mod 20, so from 100
rules on every set holds 40% exact senders, 20% sender-domain "contains", 20% subject
"contains", 10% sender plus subject, 5% body "contains" and 5% To "contains" (the
10-rule set has room for four exact senders only). Each set ends with five rules that
really match the sample emails and a catch-all, all at the highest sequences, so the
plain loop has to test every random rule first. The emails are eight realistic messages
(backup reports, monitoring alerts, an antivirus alert, an inventory report, a web form,
a customer reply with quoted history) parsed with ``halomail.parse_email``.

Printed: microseconds per email (the median of several rounds) for the indexed engine
(``scan="auto"``), the indexed engine forced to walk the automaton for every field
(``scan="automaton"``), and the plain sequential loop; then the cost at 10,000 rules
over the cost at 10. Every engine's decision is checked to be the same.

**Real mail first**: before the samples, the indexed engine at 10 and at 10,000 rules
over emails of the SpamAssassin corpus (``real_mail.py``; spread evenly over it), whose
bodies the body rules scan. The two run one after the other in each round, by CPU time;
printed is the ratio 10,000 / 10 of each round: the median, the lowest and the highest.
Every email's fields are read once before timing (parsing defers some of them), and on
the first 200 the 10,000-rule decision is checked against the plain sequential loop.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import real_mail

from halomail import parse_email
from halomail.inbound.models import InboundEmail
from halomail.rules import EmailRule, RuleEngine, RuleType

SIZES = (10, 100, 1_000, 10_000)
ROUNDS = 7
SEED = 20240531
#: How many real emails the plain loop also decides at 10,000 rules (about 20 ms each).
CHECKED_REAL = 200

WORDS = (
    "backup", "job", "nightly", "weekly", "daily", "report", "failed", "success", "warning",
    "error", "disk", "space", "server", "printer", "invoice", "order", "payment", "password",
    "reset", "vpn", "access", "account", "license", "renewal", "alert", "critical", "problem",
    "recovery", "threat", "detected", "quarantine", "inventory", "asset", "update", "patch",
    "reboot", "scheduled", "maintenance", "ticket", "request", "urgent", "outage", "network",
    "firewall", "switch", "router", "storage", "replication", "snapshot", "restore",
    "exchange", "mailbox",
)  # fmt: skip
LOCALS = (
    "backup", "alerts", "monitor", "noreply", "scanner", "reports", "it", "billing",
    "helpdesk", "nas", "ups", "veeam", "zabbix", "defender", "forms", "accounts",
)  # fmt: skip
TOOLS = ("Veeam", "Acronis", "Zabbix", "Nagios", "PRTG", "Defender", "Sophos", "Datto")


def _company(rng: random.Random) -> str:
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    syllables = rng.randint(2, 4)
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))


def make_rules(count: int, rng: random.Random) -> list[EmailRule]:
    """``count`` rules: ``count - 6`` random ones, five that match samples, a catch-all."""
    rules: list[EmailRule] = []
    types = (RuleType.HELP_REQUEST, RuleType.IGNORE, RuleType.ALERT)
    for index in range(count - 6):
        company = _company(rng) + str(index)
        domain = f"{company}.example"
        kind = index % 20
        criteria: dict[str, object]
        if kind < 8:
            criteria = {"from_": f"{rng.choice(LOCALS)}@{domain}", "from_exact": True}
        elif kind < 12:
            criteria = {"from_": f"@{domain}"}
        elif kind < 16:
            criteria = {"subject": f"{rng.choice(TOOLS)} {company}"}
        elif kind < 18:
            criteria = {"from_": f"{rng.choice(LOCALS)}@", "subject": [company, rng.choice(WORDS)]}
        elif kind < 19:
            criteria = {"body": f"{rng.choice(WORDS)} {company}"}
        else:
            criteria = {"to": f"{rng.choice(LOCALS)}-{company}@"}
        rules.append(
            EmailRule(
                name=f"rule {index:05d}",
                type=rng.choice(types),
                sequence=rng.randint(1, 10 * count),
                **criteria,  # type: ignore[arg-type]
            )
        )
    last = 10 * count
    rules += [
        EmailRule(
            name="Backups",
            type=RuleType.SERVICE_STATUS,
            sequence=last + 1,
            from_="backup@corp.example",
            from_exact=True,
            service="Nightly backup",
        ),
        EmailRule(
            name="Monitoring",
            type=RuleType.ALERT,
            sequence=last + 2,
            from_="nagios@",
            closure_string="RECOVERY",
        ),
        EmailRule(name="Antivirus", type=RuleType.VIRUS, sequence=last + 3, subject="threat"),
        EmailRule(
            name="Inventory", type=RuleType.INVENTORY, sequence=last + 4, subject="inventory"
        ),
        EmailRule(
            name="Web form",
            type=RuleType.FORMATTED_EMAIL,
            sequence=last + 5,
            from_="forms@corp.example",
            from_exact=True,
        ),
        EmailRule(name="Catch-all", type=RuleType.HELP_REQUEST, sequence=last + 6),
    ]
    return rules


def _email(sender: str, subject: str, body: str, to: str = "support@corp.example") -> bytes:
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Fri, 31 May 2024 02:00:00 +0000\r\nMessage-ID: <bench@corp.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return (head + body.replace("\n", "\r\n")).encode()


def make_emails() -> list[InboundEmail]:
    """Eight realistic emails of 0.3 to 3 KB."""
    filler = (
        "Processed 1.2 TB, read 1.1 TB, transferred 380 GB (3.1x) in 2:14:07.\n"
        "Source host fs01.corp.example, repository nas02, retention 30 restore points.\n"
    )
    raws = [
        _email(
            "Veeam Backup <backup@corp.example>",
            "[Success] Nightly file servers (3 VMs)",
            "Backup job: Nightly file servers\nStatus: Success\n" + filler * 12,
        ),
        _email(
            "Veeam Backup <backup@corp.example>",
            "[Failed] Nightly file servers (1 VM failed)",
            "Backup job: Nightly file servers\nStatus: Failed\nError: disk full on nas02\n"
            + filler * 10,
        ),
        _email(
            "Nagios <nagios@mon.corp.example>",
            "** PROBLEM Service Alert: web01/HTTP is CRITICAL **",
            "Notification Type: PROBLEM\nService: HTTP\nHost: web01\nState: CRITICAL\n"
            "Info: HTTP CRITICAL - connection refused\n",
        ),
        _email(
            "Nagios <nagios@mon.corp.example>",
            "** RECOVERY Service Alert: web01/HTTP is OK **",
            "Notification Type: RECOVERY\nService: HTTP\nHost: web01\nState: OK\n",
        ),
        _email(
            "Microsoft Defender <defender@security.corp.example>",
            "Threat detected on PC-0042",
            "Threat detected on PC-0042, severity: High\nThreat: Trojan:Win32/Wacatac.B!ml\n"
            "File: C:\\Users\\amy\\Downloads\\invoice.exe\nAction: quarantined\n",
        ),
        _email(
            "agent@pc-0042.corp.example",
            "Inventory report PC-0042",
            "Hostname: PC-0042\nAsset Tag: PC-0042\nSerial Number: 5CG1234XYZ\n"
            "OS: Windows 11 Pro 23H2\nCPU: Intel Core i5-1245U\nRAM: 16 GB\n" * 3,
        ),
        _email(
            "Website <forms@corp.example>",
            "New contact form submission",
            "Name: Jane Doe\nEmail: jane@customer.example\nPhone: +44 20 7946 0000\n"
            "Issue: The invoice portal rejects my password after the reset.\n",
        ),
        _email(
            "Bob Smith <bob@customer.example>",
            "Re: VPN drops every hour",
            "Hi, it dropped again at 10:05, see the log attached.\n\nBob\n\n"
            "On Thu, 30 May 2024 at 16:00, Support <support@corp.example> wrote:\n"
            + "> Please send us the VPN client log from the time of the next drop.\n"
            * 20,
        ),
    ]
    return [parse_email(raw) for raw in raws]


def per_email_us(
    decide: Callable[[InboundEmail, str], object], emails: list[InboundEmail]
) -> float:
    """Median over ROUNDS of the mean time per email, in microseconds."""
    repeat = 1
    # Enough repetitions that one round takes a measurable ~50 ms.
    while True:
        start = time.perf_counter()
        for _ in range(repeat):
            for email in emails:
                decide(email, "Support")
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            break
        repeat *= 2
    rounds = [elapsed]
    for _ in range(ROUNDS - 1):
        start = time.perf_counter()
        for _ in range(repeat):
            for email in emails:
                decide(email, "Support")
        rounds.append(time.perf_counter() - start)
    return statistics.median(rounds) / (repeat * len(emails)) * 1e6


def real_mail_ratio(emails: Sequence[InboundEmail], rounds: int) -> int:
    """The indexed engine at 10,000 rules over 10 on real mail, CPU time, round by round."""
    rng = random.Random(SEED)
    small = RuleEngine(make_rules(SIZES[0], rng))
    large = RuleEngine(make_rules(SIZES[-1], rng))
    for email in emails:
        # Read every field rules read (text, new text, headers) once: untimed.
        if small.evaluate(email, "Support") is None or large.evaluate(email, "Support") is None:
            print(f"NO DECISION for {email.subject!r}", file=sys.stderr)
            return 1
    for email in emails[:CHECKED_REAL]:
        # The index must decide as the plain loop does on real mail too (untimed).
        if large.evaluate(email, "Support") != large.evaluate_sequential(email, "Support"):
            print(f"MISMATCH on real mail for {email.subject!r}", file=sys.stderr)
            return 1
    few: list[float] = []
    many: list[float] = []
    for _round in range(rounds):
        for engine, seconds in ((small, few), (large, many)):
            start = time.process_time()
            for email in emails:
                engine.evaluate(email, "Support")
            seconds.append(time.process_time() - start)
    ratios = [big / small_one for small_one, big in zip(few, many, strict=True)]
    print(
        f"real mail ({len(emails)} SpamAssassin emails), indexed engine, CPU time: "
        f"{statistics.median(few) / len(emails) * 1e6:.1f} µs/email at 10 rules, "
        f"{statistics.median(many) / len(emails) * 1e6:.1f} at 10,000"
    )
    print(
        f"indexed   10,000 rules / 10 rules on real mail: {statistics.median(ratios):.2f}x "
        f"[{min(ratios):.2f} - {max(ratios):.2f}x over {rounds} rounds] (goal < 2x)"
    )
    print()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run real mail, then every size on the samples; exit 1 if engines disagree."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="a quick run (as in the tests)")
    parser.add_argument("--real", type=int, default=2000, help="real emails (default 2000)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds on real mail")
    args = parser.parse_args(argv)
    if args.short:
        args.real, args.rounds = 200, 3
    real = [parse_email(raw) for raw in real_mail.load(args.real)]
    if real_mail_ratio(real, args.rounds) != 0:
        return 1
    sizes = (SIZES[0], SIZES[-1]) if args.short else SIZES
    rng = random.Random(SEED)
    emails = make_emails()
    results: dict[int, tuple[float, float, float, float]] = {}
    print(f"{len(emails)} sample emails, {ROUNDS} rounds, median µs per email (wall time)")
    header = f"{'rules':>7}  {'build ms':>8}  {'indexed':>9}  {'automaton':>9}  {'sequential':>10}"
    print(header + "  sequential/indexed")
    for size in sizes:
        rules = make_rules(size, rng)
        start = time.perf_counter()
        auto = RuleEngine(rules)
        build_ms = (time.perf_counter() - start) * 1e3
        walk = RuleEngine(rules, scan="automaton")
        for email in emails:
            expected = auto.evaluate_sequential(email, "Support")
            for engine in (auto, walk):
                if engine.evaluate(email, "Support") != expected:
                    print(f"MISMATCH at {size} rules for {email.subject!r}", file=sys.stderr)
                    return 1
        indexed = per_email_us(auto.evaluate, emails)
        automaton = per_email_us(walk.evaluate, emails)
        sequential = per_email_us(auto.evaluate_sequential, emails)
        results[size] = (build_ms, indexed, automaton, sequential)
        print(
            f"{size:>7,}  {build_ms:>8.1f}  {indexed:>9.1f}  {automaton:>9.1f}  "
            f"{sequential:>10.1f}  {sequential / indexed:>17.1f}x"
        )
    small, large = results[SIZES[0]], results[SIZES[-1]]
    print()
    print(f"indexed   10,000 rules / 10 rules on the samples: {large[1] / small[1]:.2f}x")
    print(f"automaton 10,000 rules / 10 rules: {large[2] / small[2]:.2f}x")
    print(f"sequential 10,000 rules / 10 rules: {large[3] / small[3]:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
