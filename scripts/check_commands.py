"""Every shell command in README.md and docs/*.md names something that exists.

In each fenced block tagged sh, bash, shell or console, every command is checked:
- `make A B`: each of A, B is a target of the Makefile (`VAR=value` arguments are settings);
- `ingest`, `train`, `probe` (bare or as target/<profile>/<name>, also as what `mpirun`,
  `mpiexec` or `srun` starts): the subcommand is one the binary lists in its --help, and
  every --option is one that subcommand's --help lists;
- a path under configs/ or scripts/ exists.
Other commands (cargo, python, …) pass as they are.

Usage: python scripts/check_commands.py TARGET_DIR [FILE.md …]   (binaries from TARGET_DIR/debug)
       python scripts/check_commands.py TARGET_DIR --self-test
"""

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARIES = ("ingest", "train", "probe")
SHELL_TAGS = {"sh", "bash", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
LAUNCHERS = {"mpirun", "mpiexec", "srun"}


def make_targets(makefile: Path) -> set[str]:
    targets = set()
    for line in makefile.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+(?:[ \t]+[A-Za-z0-9_.\-]+)*)[ \t]*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


@cache
def help_text(binary: Path, subcommand: str | None) -> str:
    args = [str(binary)] + ([subcommand] if subcommand else []) + ["--help"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def subcommands(binary: Path) -> set[str]:
    lines = help_text(binary, None).splitlines()
    if "Commands:" not in lines:
        return set()
    names = set()
    for line in lines[lines.index("Commands:") + 1 :]:
        if not line.strip():
            break
        names.add(line.split()[0])
    names.discard("help")
    return names


def shell_lines(markdown: str):
    """(line number, command line) of every fenced shell block, continuations joined."""
    tag, pending, start = None, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            tag = None if tag is not None else fence.group(1)
            continue
        if tag not in SHELL_TAGS:
            continue
        if not pending:
            start = number
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        yield start, pending + text
        pending = ""


def commands(line: str):
    """The simple commands of a shell line, each a list of words, settings and redirects dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command = []
    words = list(lexer)
    index = 0
    while index < len(words):
        word = words[index]
        if word in SEPARATORS:
            if command:
                yield command
            command = []
        elif word in {">", ">>", "<", "2>", "&>"}:
            index += 1  # the redirect's file
        elif not command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            pass  # an environment setting before the command
        else:
            command.append(word)
        index += 1
    if command:
        yield command


def check_command(words: list[str], targets: set[str], bin_dir: Path) -> list[str]:
    problems = []
    if words[0] in LAUNCHERS:
        # `mpirun -n 2 target/release/train …`: check the command the launcher starts.
        start = next((i for i, word in enumerate(words) if re.search(r"target/(debug|release)/", word)), None)
        if start is not None:
            words = words[start:]
    name = Path(words[0]).name if "/" in words[0] else words[0]
    if words[0] == "make":
        for word in words[1:]:
            if word.startswith("-") or "=" in word:
                continue
            if word not in targets:
                problems.append(f"`make {word}`: no such target in the Makefile")
    elif name in BINARIES and (words[0] == name or re.search(r"target/(debug|release)/", words[0])):
        binary = bin_dir / name
        available = subcommands(binary)
        subcommand = None
        if available:
            subcommand = next((word for word in words[1:] if not word.startswith("-")), None)
            if subcommand not in available:
                problems.append(f"`{name} {subcommand}`: not a subcommand (it has {', '.join(sorted(available))})")
                return problems
        options = set(re.findall(r"--[a-z0-9][a-z0-9-]*", help_text(binary, subcommand)))
        for word in words[1:]:
            option = word.split("=", 1)[0]
            if option.startswith("--") and option not in options:
                problems.append(f"`{name} {subcommand or ''}`: no option {option}".replace(" `", "`"))
    for word in words:
        if re.match(r"^(configs|scripts)/", word) and not (ROOT / word).exists():
            problems.append(f"{word}: no such file")
    return problems


def check(markdown: str, targets: set[str], bin_dir: Path) -> list[tuple[int, str]]:
    problems = []
    for number, line in shell_lines(markdown):
        for words in commands(line):
            problems.extend((number, problem) for problem in check_command(words, targets, bin_dir))
    return problems


def self_test(targets: set[str], bin_dir: Path) -> None:
    """The checker refuses what it should and passes what it should."""
    good = "```sh\nmake demo   # the whole path\nFOO=1 target/release/probe all --run runs/x \\\n  --require-pretrained-better\n```\n"
    assert check(good, targets, bin_dir) == [], check(good, targets, bin_dir)
    for bad, said in [
        ("```sh\nmake demo no-such-target\n```\n", "no such target"),
        ("```bash\ncd x && target/debug/probe no-such-command --run r\n```\n", "not a subcommand"),
        ("```sh\nprobe all --run r --no-such-option\n```\n", "no option --no-such-option"),
        ("```sh\ntrain --config configs/no-such.toml\n```\n", "no such file"),
        ("```sh\nmpirun -n 2 target/release/train --no-such-option\n```\n", "no option --no-such-option"),
    ]:
        found = check(bad, targets, bin_dir)
        assert len(found) == 1 and said in found[0][1], (bad, found)
    # Output blocks are not commands.
    assert check("```\nmake no-such-target\n```\n", targets, bin_dir) == []
    print("check_commands self-test: ok")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    bin_dir = Path(sys.argv[1]) / "debug"
    targets = make_targets(ROOT / "Makefile")
    if sys.argv[2:] == ["--self-test"]:
        self_test(targets, bin_dir)
        return 0
    files = [Path(arg) for arg in sys.argv[2:]] or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    failures, checked = 0, 0
    for path in files:
        markdown = path.read_text()
        checked += sum(1 for _ in shell_lines(markdown))
        for number, problem in check(markdown, targets, bin_dir):
            print(f"{path.relative_to(ROOT)}:{number}: {problem}", file=sys.stderr)
            failures += 1
    print(f"{checked} command line(s) in {len(files)} file(s): {failures} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
