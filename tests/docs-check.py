#!/usr/bin/env python3
"""The documentation check: the docs may not name what the code does not have.

It reads from the code:
  - the ABI version (kernel/abi.rs ABI_VERSION) and the oldest one the tools
    accept (libbaf/src/device.rs MIN_ABI_VERSION);
  - the exit codes (baf-cli/src/lib.rs: Failure::code(), 0 and the 1 of
    exit_code(), and its doc table, which must agree with code());
  - the module parameters and their defaults (kernel/fanout.rs, module!).

and fails when README.md, docs/*.md, kernel/ABI.md, nixos/README.md,
packaging/README.md, or the tools' --help and man pages (run from --bin DIR)
  - name an ABI version the code does not have (0, or above ABI_VERSION), or
    claim a minimum ABI other than MIN_ABI_VERSION ("ABI version N or later",
    "a module older than ABI N"); --help may name only MIN_ABI_VERSION;
  - name an exit code the tools do not have, or give a code a meaning that
    belongs to another ("3 ... no module", "not loaded ... (exit 3)");
  - name a module parameter the module does not have (parameter tables,
    `modprobe fanout x=y`, "module parameter `x`", "the module's x"), give
    a parameter table default other than the code's, or leave a parameter
    out of docs/kernel.md's table;
  - have a relative link to a file or heading that does not exist.

Usage: tests/docs-check.py [--bin DIR] [FILE...]
  FILE...   check these markdown files instead of the default set
  --bin DIR also check `--help` (and subcommands' --help) and the man pages of
            DIR/pubmsg, DIR/submsg, DIR/baf-setup, DIR/baf-bridge, DIR/baf-record
Exit 0 when everything holds, 1 with one line per problem otherwise.
"""
import glob
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ["pubmsg", "submsg", "baf-setup", "baf-bridge", "baf-record"]
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def read(rel):
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- the code

def code_facts():
    abi = re.search(r"pub const ABI_VERSION: u32 = (\d+);", read("kernel/abi.rs"))
    min_abi = re.search(r"pub const MIN_ABI_VERSION: u32 = (\d+);", read("libbaf/src/device.rs"))
    if not abi or not min_abi:
        sys.exit("docs-check: cannot find ABI_VERSION in kernel/abi.rs or MIN_ABI_VERSION in libbaf/src/device.rs")

    cli = read("baf-cli/src/lib.rs")
    body = re.search(r"pub fn code\(self\) -> i32 \{(.*?)\n    \}", cli, re.S)
    classes = dict((name, int(n)) for name, n in re.findall(r"Failure::(\w+) => (\d+)", body.group(1) if body else ""))
    other = re.search(r"map_or\((\d+), Failure::code\)", cli)
    if not classes or not other or "std::process::exit(0)" not in cli:
        sys.exit("docs-check: cannot read the exit codes from baf-cli/src/lib.rs (Failure::code, exit_code, run)")
    # baf-cli's own doc table must agree with the code it documents.
    for n, name in re.findall(r"^//! \| (\d+) \| \[`Failure::(\w+)`\]", cli, re.M):
        if classes.get(name) != int(n):
            problem("baf-cli/src/lib.rs", f"its doc table gives Failure::{name} exit {n}, code() gives {classes.get(name)}")
    codes = {0, int(other.group(1))} | set(classes.values())

    fanout = read("kernel/fanout.rs")
    block = re.search(r"module! \{.*?params: \{(.*?)\n    \},\n\}", fanout, re.S)
    params = dict(re.findall(r"^        (\w+): \w+ \{\s*default: (\d+),", block.group(1) if block else "", re.M))
    if not params:
        sys.exit("docs-check: cannot read the module parameters from kernel/fanout.rs (module! params)")
    return int(abi.group(1)), int(min_abi.group(1)), codes, classes, params


ABI, MIN_ABI, CODES, CLASSES, PARAMS = code_facts()

# What each failure class means, as words the docs use for it (`meaning`), and
# phrases that can only mean that class (`only`): "3 ... not loaded" is wrong
# whatever 3 is. Keyed by baf-cli's Failure names, so a renamed or new class
# stops this check until it is described here.
MEANING = {
    "Usage": (r"usage|bad|invalid|not a baf|empty set|limit", None),
    "NoTopic": (r"no such topic|does not exist|matches nothing|missing topic|topic", r"no such topic"),
    "Permission": (r"permission", r"no permission"),
    "Busy": (r"publisher|busy", r"already has a publisher|second pubmsg"),
    "NoModule": (r"module", r"not loaded|too old|older than|no module"),
    "TimedOut": (r"time|-w|timeout", r"time ran out|timed out|no record arrived"),
}
for name in CLASSES:
    if name not in MEANING:
        sys.exit(f"docs-check: baf-cli has a failure class {name} this check does not know: describe it in MEANING")
CLASS_OF = {n: name for name, n in CLASSES.items()}


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def plain(text):
    """Markdown emphasis and code marks become spaces (offsets kept)."""
    return re.sub(r"[*`\\]", " ", text)


# ---------------------------------------------------------------- ABI versions

ABI_RE = re.compile(r"\bABI(?:[\s_]+version)?\s*:?\s+(\d+)\b", re.I)
MIN_RE = re.compile(
    r"\bABI\s+(?:version\s+)?(\d+)\s+or\s+later\b"
    r"|\bmodules?\s+older\s+than\s+(?:ABI\s+)?(?:version\s+)?(\d+)\b"
    r"|\bneeds?\s+(?:ABI\s+)?version\s+(\d+)\s+or\s+later\b", re.I)
CURRENT_RE = re.compile(r"\bABI\s+version\s*:\s+(\d+)\b", re.I)


def check_abi(name, text, help_text=False):
    t = plain(text)
    for m in ABI_RE.finditer(t):
        n = int(m.group(1))
        where = f"{name}:{line_of(t, m.start())}"
        if help_text and n != MIN_ABI:
            problem(where, f"names ABI {n}; the tools need ABI {MIN_ABI} (libbaf MIN_ABI_VERSION)")
        elif not 1 <= n <= ABI:
            problem(where, f"names ABI {n}; the code's ABI_VERSION is {ABI} (kernel/abi.rs)")
    for m in MIN_RE.finditer(t):
        n = int(next(g for g in m.groups() if g))
        if n != MIN_ABI:
            problem(f"{name}:{line_of(t, m.start())}",
                    f"says the tools need ABI {n}; they refuse anything older than {MIN_ABI} (libbaf MIN_ABI_VERSION)")
    for m in CURRENT_RE.finditer(t):
        if int(m.group(1)) != ABI:
            problem(f"{name}:{line_of(t, m.start())}", f"gives the ABI version as {m.group(1)}; the code's is {ABI}")


# ---------------------------------------------------------------- exit codes

MENTION_RE = re.compile(
    r"\b(?:exit(?:s|ed|ing)?(?:\s+(?:code|status))?|status)\s+(?:with\s+)?(?:status\s+|code\s+)?(\d+)\b(?!\s*(?:%|ms|s\b|bytes|MiB|KiB|records))",
    re.I)
BOUNDARY_RE = re.compile(r"[.;:]\s|\n\s*\n|\n\s*[-|]\s|\|")


def check_meaning(where, n, meaning):
    """`meaning` is what the text says exit `n` means."""
    if n not in CODES:
        problem(where, f"names exit code {n}; the tools have {sorted(CODES)} (baf-cli)")
        return
    low = meaning.lower()
    for cls, (_, only) in MEANING.items():
        if only and re.search(only, low) and CLASSES[cls] != n:
            problem(where, f"gives exit {n} to '{' '.join(meaning.split())[:70]}', which is {cls}: exit {CLASSES[cls]} (baf-cli)")
            return
    cls = CLASS_OF.get(n)
    if cls and not re.search(MEANING[cls][0], low):
        problem(where, f"exit {n} is {cls} in baf-cli, but the text says '{' '.join(meaning.split())[:70]}'")


def split_top(s):
    """Splits at commas and semicolons outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "(["
        depth -= ch in ")]"
        if ch in ",;" and depth <= 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def sentence_end(t, start):
    depth = 0
    for i in range(start, len(t)):
        ch = t[i]
        depth += ch in "(["
        depth -= ch in ")]"
        if depth <= 0 and ch == "." and (i + 1 == len(t) or t[i + 1].isspace()):
            return i
        if t.startswith("\n\n", i) or t.startswith("\n-", i):
            return i
    return len(t)


def check_exits(name, text):
    t = plain(text)
    listed = []  # spans of "Exit codes: N meaning, ..." lists
    for m in re.finditer(r"\bexit\s+codes\b[^:\n]{0,60}:\s*(?=\d)", t, re.I):
        end = sentence_end(t, m.end())
        listed.append((m.start(), end))
        pos = m.end()
        for part in split_top(t[m.end():end]):
            item = re.match(r"\s*(?:and\s+|or\s+)?(\d+)\s+(.*)", part, re.S)
            if item:
                check_meaning(f"{name}:{line_of(t, pos)}", int(item.group(1)), item.group(2))
            pos += len(part) + 1
    # Markdown tables whose first column is the exit code.
    lines = t.split("\n")
    i = 0
    while i < len(lines):
        head = [c.strip().lower() for c in lines[i].strip().strip("|").split("|")]
        if lines[i].lstrip().startswith("|") and head and head[0] in ("exit code", "code", "exit"):
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if cells and re.fullmatch(r"\d+", cells[0]):
                    check_meaning(f"{name}:{i + 1}", int(cells[0]), " ".join(c for c in cells[1:] if not c.startswith("[")))
                i += 1
        i += 1
    # Inline mentions: "(exit 6)", "exits with status 5", "exit 2 otherwise".
    last = 0
    for m in MENTION_RE.finditer(t):
        if any(a <= m.start() < b for a, b in listed):
            continue
        n = int(m.group(1))
        starts = [b.end() for b in BOUNDARY_RE.finditer(t, 0, m.start())]
        ctx = t[max([last] + starts[-1:]):m.start()]
        last = m.end()
        where = f"{name}:{line_of(t, m.start())}"
        if n not in CODES:
            problem(where, f"names exit code {n}; the tools have {sorted(CODES)} (baf-cli)")
            continue
        low = ctx.lower()
        for cls, (_, only) in MEANING.items():
            if only and re.search(only, low) and CLASSES[cls] != n:
                problem(where, f"gives exit {n} after '{' '.join(ctx.split())[-70:]}', which is {cls}: exit {CLASSES[cls]} (baf-cli)")
                break


# ---------------------------------------------------------------- module parameters

def check_params(name, text, help_text=False):
    t = plain(text)

    def known(p, pos, how):
        if p not in PARAMS:
            problem(f"{name}:{line_of(t, pos)}", f"names module parameter {p!r} ({how}); fanout.ko has {sorted(PARAMS)}")

    for m in re.finditer(r"\b(?:modprobe(?:\s+-\w+)*\s+fanout|insmod\s+\S*fanout\.ko|options\s+fanout)\b([^\n|)]*)", t):
        for p in re.finditer(r"(?<![\w$-])([A-Za-z_]\w*)=", m.group(1)):
            known(p.group(1), m.start(1) + p.start(), "a load command")
    for m in re.finditer(r"\bmodule(?:'s)?\s+param(?:eter)?s?\s+([a-z]\w*)", t, re.I):
        if "_" in m.group(1) or m.group(1) in ("devices",):
            known(m.group(1), m.start(1), "module parameter")
    for m in re.finditer(r"\bthe\s+module's\s+([a-z]+_[a-z_]+)\b", t):
        known(m.group(1), m.start(1), "the module's")
    if help_text:
        return
    # Tables of parameters: names, defaults, and (docs/kernel.md) completeness.
    lines = t.split("\n")
    for i, line in enumerate(lines):
        head = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        if not (line.lstrip().startswith("|") and head and head[0] == "parameter"):
            continue
        dcol = head.index("default") if "default" in head else None
        seen, j = set(), i + 2
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            cells = [c.strip() for c in lines[j].strip().strip("|").split("|")]
            p = cells[0]
            known(p, sum(len(x) + 1 for x in lines[:j]), "a parameter table")
            if p in PARAMS and dcol is not None and dcol < len(cells) and cells[dcol] != PARAMS[p]:
                problem(f"{name}:{j + 1}", f"gives parameter {p}'s default as {cells[dcol]}; kernel/fanout.rs has {PARAMS[p]}")
            seen.add(p)
            j += 1
        if name.endswith("docs/kernel.md"):
            for p in sorted(set(PARAMS) - seen):
                problem(f"{name}:{i + 1}", f"the parameter table leaves out {p} (kernel/fanout.rs)")


# ---------------------------------------------------------------- links

def slug(heading):
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path):
    out, seen = set(), {}
    fence = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.lstrip().startswith("```"):
                fence = not fence
            elif not fence and re.match(r"#{1,6}\s", line):
                s = slug(re.sub(r"^#+\s*", "", line.rstrip("\n")))
                k = seen.get(s, 0)
                seen[s] = k + 1
                out.add(s if k == 0 else f"{s}-{k}")
    return out


def check_links(name, path, text):
    t = re.sub(r"```.*?```", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)
    t = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group(0)), t)
    for m in re.finditer(r"\]\(([^)\s]+)\)", t):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue
        file, _, frag = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        where = f"{name}:{line_of(t, m.start())}"
        if not os.path.exists(dest):
            problem(where, f"links to {target}, which does not exist")
        elif frag and dest.endswith(".md") and frag not in anchors(dest):
            problem(where, f"links to {target}, but {os.path.relpath(dest, REPO)} has no heading #{frag}")


# ---------------------------------------------------------------- --help and man pages

def help_texts(bindir):
    out = []
    for tool in TOOLS:
        exe = os.path.join(bindir, tool)
        if not os.access(exe, os.X_OK):
            problem(exe, "not built (cargo build --workspace --bins)")
            continue

        def run(*args):
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                problem(f"{tool} {' '.join(args)}", f"exit {r.returncode}: {r.stderr.strip()[:200]}")
            return r.stdout

        top = run("--help")
        out.append((f"{tool} --help", top))
        subs = re.search(r"^Commands:\n(.*?)(?:\n\n|\Z)", top, re.M | re.S)
        for sub in re.findall(r"^  ([a-z][\w-]*)", subs.group(1), re.M) if subs else []:
            if sub != "help":
                out.append((f"{tool} {sub} --help", run(sub, "--help")))
        # baf-setup generates with a (hidden) subcommand, baf-record (which
        # has subcommands too) and the others with a flag.
        man = run("generate", "man") if subs and tool != "baf-record" else run("--generate", "man")
        man = re.sub(r"\\f[BIRP]|\\\(..|\\&", "", man).replace("\\-", "-")
        man = "\n".join(line for line in man.split("\n") if not line.startswith("."))
        out.append((f"{tool} man page", man))
    return out


def main(argv):
    bindir, files = None, []
    while argv:
        a = argv.pop(0)
        if a == "--bin" and argv:
            bindir = argv.pop(0)
        elif a.startswith("-"):
            sys.exit(__doc__)
        else:
            files.append(a)
    if not files:
        files = [os.path.join(REPO, p) for p in ["README.md", "kernel/ABI.md", "nixos/README.md", "packaging/README.md"]]
        files += sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
        if not os.path.exists(os.path.join(REPO, "docs", "kernel.md")):
            problem("docs/kernel.md", "missing: it holds the module parameter table")
    for path in files:
        name = os.path.relpath(path, REPO) if os.path.isabs(path) else path
        with open(path, encoding="utf-8") as f:
            text = f.read()
        check_abi(name, text)
        check_exits(name, text)
        check_params(name, text)
        check_links(name, os.path.abspath(path), text)
    helps = help_texts(bindir) if bindir else []
    for name, text in helps:
        check_abi(name, text, help_text=True)
        check_exits(name, text)
        check_params(name, text, help_text=True)
    for p in problems:
        print(f"docs-check: {p}")
    print(f"docs-check: {len(files)} documents, {len(helps)} help texts and man pages; code: ABI {ABI} "
          f"(tools need {MIN_ABI}), exit codes {sorted(CODES)}, module parameters {', '.join(sorted(PARAMS))}: "
          + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
