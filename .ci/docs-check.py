#!/usr/bin/env python3
"""Runs the shell commands of README.md and docs/ the way a reader would.

Every fenced shell block (```sh, ```bash, ```shell, ```console) must say
what it is, in the second word of its info string:

- ```sh run: executed with bash (-euo pipefail) from the repository root.
  It may talk to the demo at its default addresses (127.0.0.1:7000 echo
  over TCP and UDP, 127.0.0.1:7100 chat, 127.0.0.1:7200 plain files,
  127.0.0.1:8080 HTTP, and its admin port at 127.0.0.1:7300, as the demo
  started with `--admin 127.0.0.1:7300`): the check starts one demo on free ports and
  rewrites those addresses, so no fixed port is ever bound. A block must
  end on its own within BLOCK_TIMEOUT seconds.
- ```sh server: starts a server that runs until stopped. The check runs it
  in the background with every listener address moved to port 0 (and, for
  the demo, every listener given as a flag), waits for its first
  `listening ...` line on stdout, stops it with SIGTERM and expects exit 0.
- ```sh bench: a measurement or other long run (minutes of load, nginx,
  perf, tools/bench, fuzzing). Not run here; checked with `bash -n`, and
  every repository path and example it names must exist. It must run from
  a clone: nothing outside the repository (no `../`).
- ```sh cross-check: a run of the outside harness (`../shared/bench`),
  which a clone does not have; the figures it gave are a cross-check of
  the repository's own. Checked like a bench block, except that it may
  name `../shared/`. Outside such blocks, `../shared` may appear in
  README.md, docs/, src/, examples/, tests/ and tools/ only on a line that
  says it is the cross-check (the words "cross-check" or "outside").
- ```sh ci: a command `.ci/run` itself runs (the README's `cargo test`);
  the check only makes sure `.ci/run` still runs it.

Rust blocks in the guide, the tutorial and the embedding guide are quotes:
each piece between `// ...` lines must appear, as it is, in a file under
src/, examples/ or tests/, so a quote cannot drift from the code. The
Chinese guide must carry the same code blocks as the English one.

The loop's numbered steps: the titles of the numbered list in
src/reactor.rs's module comment and in docs/architecture.md's "One turn of
the loop" must be the same, in the same order.

Inline commands in the README's tables (code spans that start with nc,
printf, curl, socat or `cargo run`) are run as `sh run` blocks.

Exits 1 with the block, its output and its place when anything fails.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BLOCK_TIMEOUT = 120
SERVER_START_TIMEOUT = 300
SHELLS = {"sh", "bash", "shell", "console"}
KINDS = {"run", "server", "bench", "ci", "cross-check"}
INLINE_STARTS = ("nc ", "printf ", "curl ", "socat ", "cargo run ")
DEMO_LISTENER_FLAGS = ["--echo", "--echo-udp", "--chat", "--files", "--http"]


def markdown_files():
    files = [os.path.join(ROOT, "README.md")]
    for base, dirs, names in os.walk(os.path.join(ROOT, "docs")):
        dirs.sort()
        files += [os.path.join(base, n) for n in sorted(names) if n.endswith(".md")]
    fuzz = os.path.join(ROOT, "tests", "fuzz", "README.md")
    if os.path.exists(fuzz):
        files.append(fuzz)
    return files


def blocks(path):
    """Yields (line number, info words, text) for each fenced block."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        start = i + 1
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        yield start, info.replace(",", " ").split(), "\n".join(body) + "\n"


def inline_commands(path):
    """Yields (line number, command) for code spans in table rows."""
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        if not line.lstrip().startswith("|"):
            continue
        for span in re.findall(r"`([^`]+)`", line):
            span = span.replace("\\|", "|")
            if span.startswith(INLINE_STARTS):
                yield number, span


def free_port_for_tcp_and_udp():
    for _ in range(50):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return port
    sys.exit("docs-check: no port free for both TCP and UDP")


def read_announces(proc, count, deadline):
    lines = []
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("listening "):
            lines.append(line.split())
    return lines


class Demo:
    """One demo server on free ports, and the rewrite of its default addresses."""

    def __init__(self, bin_dir):
        port = free_port_for_tcp_and_udp()
        flags = ["--echo", f"127.0.0.1:{port}", "--echo-udp", f"127.0.0.1:{port}",
                 "--chat", "127.0.0.1:0", "--files", "127.0.0.1:0", "--http", "127.0.0.1:0",
                 "--admin", "127.0.0.1:0", "--root", ROOT]
        self.proc = subprocess.Popen([os.path.join(bin_dir, "demo"), *flags], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True)
        got = read_announces(self.proc, 6, time.monotonic() + 30)
        if len(got) != 6:
            self.stop()
            sys.exit(f"docs-check: the demo announced {got}, expected 6 sockets")
        ports = [words[2].rsplit(":", 1)[1] for words in got]
        # Announce order: echo tcp, echo udp, chat, files, http, admin.
        self.ports = {"7000": ports[0], "7100": ports[2], "7200": ports[3], "8080": ports[4],
                      "7300": ports[5]}

    def rewrite(self, text):
        for default, actual in self.ports.items():
            text = re.sub(rf"127\.0\.0\.1([: ]){default}\b", rf"127.0.0.1\g<1>{actual}", text)
            text = re.sub(rf"localhost([: ]){default}\b", rf"localhost\g<1>{actual}", text)
        return text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def env_with(bin_dir):
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("RUST_LOG", "warn")
    return env


def run_block(text, env):
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        return f"did not end within {BLOCK_TIMEOUT} s\n{err.stdout or ''}{err.stderr or ''}"
    if done.returncode != 0:
        return f"exit {done.returncode}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    return None


def server_command(text):
    """The block with listeners on port 0, and the demo given every listener."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:0", text)
    lines = text.rstrip("\n").split("\n")
    last = lines[-1]
    if re.search(r"(--example demo|examples/demo)\b", last) and not any(
            flag in last for flag in DEMO_LISTENER_FLAGS):
        extra = " ".join(f"{flag} 127.0.0.1:0" for flag in DEMO_LISTENER_FLAGS)
        last = f"{last} -- {extra}" if "--example demo" in last and " -- " not in last \
            else f"{last} {extra}"
    lines[-1] = "exec " + last
    return "\n".join(lines) + "\n"


def run_server(text, env):
    command = server_command(text)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    got = read_announces(proc, 1, time.monotonic() + SERVER_START_TIMEOUT)
    if not got:
        proc.kill()
        out, err = proc.communicate()
        return f"announced no socket\n--- command\n{command}--- stdout\n{out}--- stderr\n{err}"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return "did not stop within 15 s of SIGTERM"
    if code != 0:
        return f"exit {code} after SIGTERM\n--- stderr\n{proc.stderr.read()}"
    return None


def check_ci(text):
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().split("\n")
    for command in text.strip().split("\n"):
        if command.strip() and command.strip() not in (line.strip() for line in ci):
            return f"`.ci/run` does not run `{command.strip()}`"
    return None


def check_bench(text, outside=False):
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        return f"bash -n: {done.stderr}"
    examples = {n[:-3] for n in os.listdir(os.path.join(ROOT, "examples")) if n.endswith(".rs")}
    examples |= {n for n in os.listdir(os.path.join(ROOT, "examples"))
                 if os.path.isdir(os.path.join(ROOT, "examples", n, ""))}
    for word in shlex.split(text, comments=True):
        if "$" in word or "/target/" in word or any(c in word for c in "*?["):
            continue  # a variable, a build product, or a pattern
        m = re.match(r"^(?:\$PWD/|\./)?(target/(?:release|debug)/examples/)([A-Za-z_]+)$", word)
        if m and m.group(2) not in examples:
            return f"no example named {m.group(2)}"
        if re.match(r"^(docs|\.ci|examples|tests|src)/\S+$", word) and not os.path.exists(
                os.path.join(ROOT, word)):
            return f"no such file: {word}"
        if re.match(r"^(tools)/\S+$", word) and not os.path.exists(os.path.join(ROOT, word)):
            return f"no such file: {word}"
        if word.startswith("../") and not outside:
            return f"{word}: a bench block runs from a clone, which has nothing outside it"
        if word.startswith("../shared/") and os.path.isdir(os.path.join(ROOT, "..", "shared")) \
                and not os.path.exists(os.path.join(ROOT, word)):
            return f"no such file: {word}"
    return None


QUOTING_DOCS = ["docs/guide.md", "docs/guide.zh.md", "docs/tutorial.md", "docs/embedding.md"]


def source_texts():
    texts = []
    for top in ("src", "examples", "tests"):
        for base, dirs, names in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "target"]
            texts += [open(os.path.join(base, n), encoding="utf-8").read()
                      for n in names if n.endswith(".rs")]
    return texts


def check_quotes():
    """Yields (file, line, block, problem) for Rust quotes not in the code."""
    texts = source_texts()
    for rel in QUOTING_DOCS:
        path = os.path.join(ROOT, rel)
        if not os.path.exists(path):
            continue
        for line, info, text in blocks(path):
            if not info or not info[0].startswith("rust"):
                continue
            pieces, piece = [], []
            for row in text.split("\n"):
                if row.strip() == "// ...":
                    pieces.append(piece)
                    piece = []
                else:
                    piece.append(row)
            pieces.append(piece)
            for piece in pieces:
                quoted = "\n".join(piece).strip("\n")
                if quoted.strip() and not any(quoted in t for t in texts):
                    yield rel, line, text, "this Rust quote is not in src/, examples/ or tests/"
                    break
    english = [(i, t) for _, i, t in blocks(os.path.join(ROOT, "docs/guide.md"))
               if i and i[0] != "text"]
    chinese = [(i, t) for _, i, t in blocks(os.path.join(ROOT, "docs/guide.zh.md"))
               if i and i[0] != "text"]
    if english != chinese:
        yield "docs/guide.zh.md", 1, "", "its code blocks differ from docs/guide.md's"


def loop_steps(lines):
    """The bold titles of a numbered list, in order: `1. **Timeout.**`."""
    return [m.group(1) for m in (re.match(r"\s*(?://!\s*)?\d+\.\s+\*\*([^*]+)\*\*", l)
                                 for l in lines) if m]


def check_loop_steps():
    """Yields a problem if the loop's steps differ between code and docs."""
    code = loop_steps(open(os.path.join(ROOT, "src/reactor.rs"), encoding="utf-8")
                      .read().split("\n"))
    page = open(os.path.join(ROOT, "docs/architecture.md"), encoding="utf-8").read()
    section = page.split("## One turn of the loop", 1)[-1].split("\n## ", 1)[0]
    docs = loop_steps(section.split("\n"))
    if not code or code != docs:
        yield ("docs/architecture.md", 1, f"src/reactor.rs: {code}\ndocs: {docs}",
               "the loop's numbered steps differ from src/reactor.rs's")


def check_outside_mentions():
    """Yields (file, line, text, problem) for `../shared` named anywhere in
    the repository's text but a cross-check block or a line that says it is
    the cross-check."""
    files = []
    for top in ("README.md", "docs", "src", "examples", "tests", "tools"):
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            files.append(path)
        for base, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if d not in ("target", "corpus", "artifacts")]
            files += [os.path.join(base, n) for n in names]
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (UnicodeDecodeError, OSError):
            continue
        in_cross_check = False
        for number, text in enumerate(lines, 1):
            if text.startswith("```"):
                in_cross_check = text.split()[1:2] == ["cross-check"]
                continue
            if "../shared" in text and not in_cross_check and not re.search(
                    r"cross-check|outside", text, re.IGNORECASE):
                yield (os.path.relpath(path, ROOT), number, text,
                       "names ../shared, which a clone does not have (only the cross-check may)")


def main():
    bin_dir = os.path.join(ROOT, "target", "debug", "examples")
    if len(sys.argv) > 1:
        bin_dir = os.path.abspath(sys.argv[1])
    env = env_with(bin_dir)
    failures = list(check_quotes()) + list(check_loop_steps()) + list(check_outside_mentions())
    counts = {"run": 0, "server": 0, "bench": 0, "ci": 0, "cross-check": 0, "inline": 0}
    demo = Demo(bin_dir)
    try:
        for path in markdown_files():
            rel = os.path.relpath(path, ROOT)
            for line, info, text in blocks(path):
                if not info or info[0] not in SHELLS:
                    continue
                kind = info[1] if len(info) > 1 else None
                if kind not in KINDS:
                    failures.append((rel, line, text, "a shell block must say `run`, "
                                     "`server` or `bench` after its language"))
                    continue
                counts[kind] += 1
                if kind == "run":
                    problem = run_block(demo.rewrite(text), env)
                elif kind == "server":
                    problem = run_server(text, env)
                elif kind == "ci":
                    problem = check_ci(text)
                else:
                    problem = check_bench(text, outside=kind == "cross-check")
                status = "ok" if problem is None else "FAILED"
                print(f"{rel}:{line}: sh {kind}: {status}", flush=True)
                if problem:
                    failures.append((rel, line, text, problem))
            if os.path.basename(path) == "README.md" and rel == "README.md":
                for line, command in inline_commands(path):
                    counts["inline"] += 1
                    problem = run_block(demo.rewrite(command) + "\n", env)
                    print(f"{rel}:{line}: `{command}`: {'ok' if problem is None else 'FAILED'}",
                          flush=True)
                    if problem:
                        failures.append((rel, line, command, problem))
    finally:
        demo.stop()
    print(f"docs-check: {counts['run']} run blocks, {counts['inline']} table commands, "
          f"{counts['server']} server blocks, {counts['bench']} bench, "
          f"{counts['cross-check']} cross-check and {counts['ci']} ci blocks checked")
    for rel, line, text, problem in failures:
        print(f"\n{rel}:{line}: {problem}\n--- block\n{text}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
