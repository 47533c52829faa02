"""The programs the classifier knows: which never write, which always do, which run code
it cannot see, and for the rest a rule over their options and subcommands. A rule reads
the arguments as the program will get them, so it is only asked about commands whose every
argument is known before they run; what it does not know is never read-only."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from operator_ai.approval.verdicts import READ, Args, Classification, unknown, writes

SAFE_ENV = {"ETCDCTL_API", "ETCDCTL_ENDPOINTS", "LANG", "LC_ALL", "TZ", "COLUMNS", "TERM"}
"""Variables a command may be given on its own line without changing what it can do."""
PROGRAM_DIRS = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/")


ARITHMETIC = re.compile(r"\s-(eq|ne|lt|le|gt|ge|v)\s")
"""Test operators that make bash evaluate their operands (a subscript can run code)."""
SAFE_SINKS = {"/dev/null"}
"""`/dev/stdout` is not one: it reopens whatever descriptor 1 was redirected to."""


def system_program(name: str) -> str | None:
    """The program's name, if it is one found on the system's path (not a script of the
    lab user's, not a path that climbs out of a system directory)."""
    if "/" not in name:
        return name
    if ".." in name.split("/") or not name.startswith(PROGRAM_DIRS):
        return None
    return name.rsplit("/", 1)[1]


def judge(program: str, args: Args) -> Classification:
    """A simple command by its program's rule. A rule reads the arguments as written, so
    it judges only commands whose every argument is known before they run."""
    if program in ALWAYS_READ:
        return READ
    if program in ALWAYS_WRITES:
        return writes(f"{program} changes state")
    if program in NOT_PROVABLE:
        return unknown(f"{program} runs code it cannot see into")
    rule = RULES.get(program)
    if rule is None:
        return unknown(f"{program} is a program it has no table for")
    if args.opaque:
        return unknown(f"{program}'s arguments are only known when it runs")
    if any("\n" in word or "\r" in word for word in args.words):
        return unknown(f"{program} is given a line break, which a server could read as a command")
    return rule(args)


# -- options ------------------------------------------------------------------------------


def options(
    args: Args, with_value: Iterable[str] = ()
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split ``args`` into options (each with its value) and operands. Short options cluster
    (``-sSo FILE``); ``with_value`` names the options that take one (``-o``, ``--output``)."""
    takes = set(with_value)
    found: list[tuple[str, str | None]] = []
    operands: list[str] = []
    words = list(args.words)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            operands += words[i + 1 :]
            break
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            if not eq and name in takes and i + 1 < len(words):
                i += 1
                value, eq = words[i], "="
            found.append((name, value if eq else None))
        elif word.startswith("-") and len(word) > 1:
            for j, letter in enumerate(word[1:], start=1):
                flag = f"-{letter}"
                if flag in takes:
                    rest = word[j + 1 :]
                    if not rest and i + 1 < len(words):
                        i += 1
                        rest = words[i]
                    found.append((flag, rest))
                    break
                found.append((flag, None))
        else:
            operands.append(word)
        i += 1
    return found, operands


def _names(found: Sequence[tuple[str, str | None]]) -> set[str]:
    return {name for name, _ in found}


def _is(name: str, options: Iterable[str]) -> bool:
    """Whether the option ``name`` is, or abbreviates (GNU getopt and curl take ``--out``
    for ``--output``), one of ``options``."""
    return any(
        name == option or (name.startswith("--") and len(name) >= 3 and option.startswith(name))
        for option in options
    )


def _hits(found: Sequence[tuple[str, str | None]], forbidden: Iterable[str]) -> list[str]:
    """The options in ``found`` that are, or abbreviate, one of ``forbidden``."""
    forbidden = set(forbidden)
    return sorted({name for name, _ in found if _is(name, forbidden)})


def _leading(args: Args, with_value: Iterable[str], known: Iterable[str]) -> tuple[int, str | None]:
    """Where the first operand is, past the options before it; and the first of those it
    does not know (a value-taking option it does not know would swallow the next word)."""
    takes, allowed = set(with_value), {*with_value, *known}
    words, i = args.words, 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        name = words[i].split("=", 1)[0]
        if name not in allowed:
            return i, name
        i += 2 if name in takes and "=" not in words[i] else 1
    return i, None


def _unknown_options(
    found: Sequence[tuple[str, str | None]], known: Iterable[str], program: str
) -> Classification | None:
    """UNKNOWN when an option is not in ``known``: a value-taking option it does not know
    would make it read the next word wrongly."""
    strange = sorted(_names(found) - set(known))
    if strange:
        return unknown(f"{program} is given an option it has no table for ({strange[0]})")
    return None


# -- the programs ---------------------------------------------------------------------------

ALWAYS_READ = {
    "cat", "head", "tail", "grep", "egrep", "fgrep", "zgrep", "zcat", "wc", "ls", "stat",
    "df", "du", "free", "uptime", "ps", "pgrep", "pidof", "id", "whoami", "groups", "uname",
    "printenv", "echo", "true", "false", "which", "type", "readlink",
    "realpath", "basename", "dirname", "seq", "sleep", "jq", "column", "cut", "tr", "nl",
    "od", "hexdump", "strings", "md5sum", "sha1sum", "sha256sum", "cksum", "diff", "cmp",
    "comm", "cd", "pwd", "nproc", "lsof", "getent", "netstat", "lscpu", "lsblk", "findmnt",
    "mountpoint", "vmstat", "iostat", "mpstat", "pstree", "ping", "dig", "host", "getconf",
    "locale", "tac", "rev", "fold", "fmt", "expand", "paste", "join", "look", "base64",
    "expr", "bc", "numfmt", "lsns", "whereis", ":",
}  # fmt: skip
"""Programs with no option that writes a file, runs a command or changes the shell for
what follows, whatever their arguments. Builtins that do (`alias`, `hash`, `set`, `read`,
`jobs -x`...) and programs with a writing option (`tree -o`, `less -o`, `xxd`, `file -C`)
are not among them."""
ALWAYS_WRITES = {
    "rm", "rmdir", "mv", "cp", "mkdir", "touch", "chmod", "chown", "chgrp", "ln", "truncate",
    "dd", "shred", "kill", "pkill", "killall", "mount", "umount", "install", "vi", "vim",
    "nano", "emacs", "ed", "patch", "mkfifo", "mknod", "fallocate", "rsync", "scp", "sync",
    "reboot", "shutdown", "halt", "useradd", "userdel", "passwd", "crontab", "iptables",
    "tc", "sysctl", "renice", "setfacl", "chattr", "wget",
}  # fmt: skip
NOT_PROVABLE = {
    "eval", "exec", "source", ".", "bash", "sh", "dash", "zsh", "python", "python3",
    "perl", "ruby", "node", "php", "lua", "sudo", "su", "runuser", "setpriv", "nsenter",
    "unshare", "chroot", "busybox", "make", "script", "expect", "ssh", "docker", "kubectl",
    "systemd-run", "at", "batch", "trap", "builtin", "command", "fc", "watch",
}  # fmt: skip
"""Programs that run code given as an argument or a file: nothing here sees that code."""


def _needs(
    forbidden: set[str], what: str, with_value: Iterable[str] = ()
) -> Callable[[Args], Classification]:
    """A rule: read-only unless one of ``forbidden`` options is given."""

    def rule(args: Args) -> Classification:
        found, _ = options(args, with_value)
        hit = _hits(found, forbidden)
        return writes(f"{what} with {', '.join(hit)}") if hit else READ

    return rule


def _inner(
    with_value: Iterable[str], what: str, leading: int = 0, flags: Iterable[str] = ()
) -> Callable[[Args], Classification]:
    """A rule for a program that runs another (``timeout 5 CMD``): judge that one. Its own
    options must be known, or the program it runs is not known either."""
    takes, known = set(with_value), set(flags)

    def rule(args: Args) -> Classification:
        found = _wrapped(args, takes, known, leading)
        if isinstance(found, Classification):
            return found
        if found is None:
            return READ
        program, rest = found
        return judge(program, rest)

    return rule


def _wrapped(
    args: Args, takes: set[str], known: set[str], leading: int = 0
) -> tuple[str, Args] | Classification | None:
    """The program a wrapper runs and its arguments; None when it runs none; UNKNOWN when
    the wrapper's options cannot be followed."""
    words, i = args.words, 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word = words[i]
        name = word.split("=", 1)[0]
        if word in takes:
            i += 2
        elif name in known or (name in takes and "=" in word):
            i += 1
        elif any(word.startswith(t) and not t.startswith("--") for t in takes):
            i += 1  # a short option with its value attached: -n5, -oL
        else:
            return unknown(f"it is given an option it has no table for ({name})")
    i += leading
    if i >= len(words):
        return None
    program = system_program(words[i])
    if program is None:
        return unknown(f"it runs {words[i]}, not a system program")
    return program, Args(words[i + 1 :], frozenset(j - i - 1 for j in args.opaque if j > i))


SED_ADDRESS = r"(?:\d+|\$|/(?:[^/\\\n]|\\.)*/I?)"
SED_COMMAND = (
    rf"(?:{SED_ADDRESS}(?:,{SED_ADDRESS})?\s*!?\s*)?"
    r"(?:[pdqQ=nNgGhHxlz]|s/(?:[^/\\\n]|\\.)*/(?:[^/\\\n]|\\.)*/[gpiImM0-9]*"
    r"|y/(?:[^/\\\n]|\\.)*/(?:[^/\\\n]|\\.)*/)"
)
SED_SCRIPT = re.compile(rf"\s*{SED_COMMAND}(?:\s*[;\n]\s*{SED_COMMAND})*\s*;?\s*")
"""The sed scripts it reads as harmless: printing, deleting, `s///` and `y///` with `/` as
the delimiter and no `w` or `e` flag. Anything else (`w FILE`, `e CMD`, `r`, other
delimiters, braces) is not proved read-only."""


def _sed(args: Args) -> Classification:
    found, operands = options(args, ("-e", "--expression", "-f", "--file", "-l"))
    if _hits(found, {"-i", "--in-place"}) or any(n.startswith("-i") for n in _names(found)):
        return writes("sed edits files in place (-i)")
    strange = _unknown_options(found, {"-n", "--quiet", "--silent", "-e", "--expression",
                                       "-E", "-r", "--regexp-extended", "-s", "-u", "-z",
                                       "--posix", "--debug"}, "sed")  # fmt: skip
    if strange:
        return strange
    scripts = [v or "" for n, v in found if n in ("-e", "--expression")] or operands[:1]
    if not all(SED_SCRIPT.fullmatch(script) for script in scripts):
        return unknown("sed's script does more than print, delete and substitute")
    return READ


def _awk(args: Args) -> Classification:
    found, operands = options(args, ("-F", "-v", "--field-separator", "--assign"))
    strange = _unknown_options(found, {"-F", "-v", "--field-separator", "--assign"}, "awk")
    if strange:
        return strange
    program = operands[0] if operands else ""
    if re.search(r"system|getline|fflush|close|printf?\s*>|[>|@]|print\s*\|", program):
        return unknown("awk's program may write a file or run a command")
    return READ


def _find(args: Args) -> Classification:
    words = set(args.words)
    if words & {"-delete"}:
        return writes("find deletes what it finds (-delete)")
    if words & {"-fprint", "-fprint0", "-fprintf", "-fls"}:
        return writes("find writes a file")
    if words & {"-exec", "-execdir", "-ok", "-okdir"}:
        return unknown("find runs a command on what it finds (-exec)")
    return READ


def _tee(args: Args) -> Classification:
    _, operands = options(args)
    files = [f for f in operands if f not in SAFE_SINKS]
    return writes(f"tee writes {', '.join(files)}") if files else READ


def _sort(args: Args) -> Classification:
    found, _ = options(args, ("-o", "--output", "-k", "-t", "-S", "-T", "--compress-program"))
    if _hits(found, {"-o", "--output"}):
        return writes("sort writes its output to a file (-o)")
    if _hits(found, {"--compress-program", "--files0-from"}):
        return unknown("sort runs a program or reads its list of files from elsewhere")
    return READ


def _uniq(args: Args) -> Classification:
    _, operands = options(args, ("-f", "-s", "-w"))
    return writes("uniq writes its output to a file") if len(operands) > 1 else READ


def _tar(args: Args) -> Classification:
    found, operands = options(args, ("-f", "--file"))
    if any(":" in (v or "") for n, v in found if n in ("-f", "--file")):
        return unknown("tar reaches a remote archive through rsh or ssh")
    old_style = operands and not args.words[0].startswith("-")  # `tar tf x.tar`
    mode = _names(found) | ({f"-{c}" for c in operands[0]} if old_style else set())
    listing = {"-t", "--list", "-f", "--file", "-v", "--verbose", "-z", "-j", "-J", "--gzip"}
    if mode & {"-t", "--list"} and mode <= listing:
        return READ
    if mode & {"-t", "--list"}:
        return unknown("tar is given an option it has no table for")
    return writes("tar creates or extracts an archive")


def _date(args: Args) -> Classification:
    found, operands = options(args, ("-d", "--date", "-r", "--reference", "-f"))
    if _hits(found, {"-s", "--set"}) or any(not o.startswith("+") for o in operands):
        return writes("date sets the clock")
    return READ


def _hostname(args: Args) -> Classification:
    found, operands = options(args)
    if operands or _hits(found, {"-F", "--file", "-b", "--boot"}):
        return writes("hostname sets the host's name")
    known = {"-s", "--short", "-f", "--fqdn", "--long", "-d", "--domain", "-i", "-I",
             "--ip-address", "--all-ip-addresses", "-a", "-A", "--alias", "-y"}  # fmt: skip
    return _unknown_options(found, known, "hostname") or READ


def _env(args: Args) -> Classification:
    words, i = list(args.words), 0
    while i < len(words) and "=" in words[i] and not words[i].startswith("-"):
        if words[i].split("=")[0] not in SAFE_ENV:
            return unknown(f"env sets {words[i].split('=')[0]} for the program")
        i += 1
    rest = Args(tuple(words[i:]), frozenset(j - i for j in args.opaque if j >= i))
    return _inner(("-u", "--unset"), "env", flags=("-i", "--ignore-environment", "-0", "--null"))(
        rest
    )


def _xargs(args: Args) -> Classification:
    """xargs adds words it reads to the command: only a program none of whose arguments
    can make it write is read-only behind it."""
    found = _wrapped(args, {"-n", "-I", "-P", "-L", "-d", "-s", "-E", "-a", "--max-args",
                            "--replace", "--max-procs", "--max-lines", "--delimiter",
                            "--max-chars", "--eof", "--arg-file"},
                     {"-0", "--null", "-r", "--no-run-if-empty", "-t", "--verbose", "-x",
                      "--exit"})  # fmt: skip
    if isinstance(found, Classification):
        return found
    if found is None:
        return READ
    verdict = judge(*found)
    if verdict.read_only and found[0] not in ALWAYS_READ:
        return unknown(f"xargs adds the words it reads to {found[0]}, whose options can write")
    return verdict


def _time(args: Args) -> Classification:
    found, _ = options(args, ("-o", "--output", "-f", "--format"))
    if _hits(found, {"-o", "--output", "-a", "--append"}):
        return writes("time writes its report to a file (-o)")
    return _inner(("-f", "--format"), "time", flags=("-p", "--portability", "-v", "--verbose"))(
        args
    )


def _test(args: Args) -> Classification:
    if ARITHMETIC.search(f" {' '.join(args.words)} "):
        return unknown("the test evaluates arithmetic or a subscript, which can run code")
    return READ


def _printf(args: Args) -> Classification:
    setting = any(w.startswith("-v") for w in args.words)
    return unknown("printf -v sets a variable") if setting else READ


def _xxd(args: Args) -> Classification:
    _, operands = options(args, ("-c", "-g", "-l", "-s", "-o", "-n"))
    return writes("xxd writes its second operand") if len(operands) > 1 else READ


def _ss(args: Args) -> Classification:
    found, _ = options(args, ("-D", "--diag", "-F", "--filter", "-f", "--family", "-A"))
    if _hits(found, {"-K", "--kill"}):
        return writes("ss kills sockets (-K)")
    if _hits(found, {"-D", "--diag"}):
        return writes("ss writes a dump file (-D)")
    return READ


def _curl(args: Args) -> Classification:
    found, operands = options(args, CURL_VALUES)
    for url in operands:
        if not url.lower().startswith(("http://", "https://")):
            return unknown(f"curl is given {url}, not an http(s) URL")
    # curl takes an unambiguous prefix of a long option: judge every name by _hits.
    if hit := _hits(found, {"--proto-default", "-Q", "--quote", "--hsts", "--alt-svc", "--url",
                            "--next", "-:", "--variable", "--expand-url", "-K", "--config",
                            "--netrc-file", "--unix-socket", "--create-dirs"}):  # fmt: skip
        return unknown(f"curl speaks another protocol or reads or writes state ({hit[0]})")
    if hit := _hits(found, CURL_BODY):
        return writes(f"curl sends a body ({hit[0]})")
    if hit := _hits([(n, v) for n, v in found if v not in ("-", "/dev/null")], CURL_FILES):
        return writes(f"curl writes a file ({hit[0]})")
    for name, value in found:
        given = value or ""
        if _is(name, ("-X", "--request")) and given.upper() not in ("GET", "HEAD"):
            return writes(f"curl sends a {value} request")
        if _is(name, ("-w", "--write-out")) and ("%output{" in given or given.startswith("@")):
            return writes("curl's --write-out may write a file")
        if _is(name, ("-H", "--header")) and not HEADER.fullmatch(given):
            return unknown("a header curl sends could speak another protocol to the server")
    return _unknown_options(found, {*CURL_VALUES, *CURL_FLAGS}, "curl") or READ


HEADER = re.compile(r"(?!host\s*:\s*$)[A-Za-z0-9-]+:[^\r\n]*", re.I)
"""A header as HTTP has them: a name without spaces, not a blanked Host (with those, a
request line aimed at Redis reads as a command)."""
CURL_FLAGS = {
    "-s", "--silent", "-S", "--show-error", "-f", "--fail", "--fail-with-body", "-L",
    "--location", "-k", "--insecure", "-v", "--verbose", "-i", "--include", "-I", "--head",
    "-g", "--globoff", "-N", "--no-buffer", "--compressed", "-4", "-6", "-#",
    "--progress-bar", "--http1.1", "--http2", "-q", "-G", "--get", "-n", "--netrc",
}  # fmt: skip
"""curl's options it knows to take no value: any other would be read as a value-less flag."""


CURL_BODY = {"-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--data-ascii",
             "-F", "--form", "--form-string", "-T", "--upload-file", "--json"}  # fmt: skip
CURL_FILES = {"-o", "--output", "-O", "--remote-name", "--remote-name-all", "-D",
              "--dump-header", "-c", "--cookie-jar", "--trace", "--trace-ascii", "--libcurl",
              "--output-dir", "--etag-save", "--stderr"}  # fmt: skip
CURL_VALUES = {
    "-X", "--request", "-d", "--data", "--data-raw", "--data-binary", "--data-urlencode",
    "--data-ascii", "-F", "--form", "--form-string", "-T", "--upload-file", "--json", "-o",
    "--output", "-D", "--dump-header", "-c", "--cookie-jar", "--trace", "--trace-ascii",
    "--libcurl", "--output-dir", "--etag-save", "--stderr", "-H", "--header", "-u", "--user",
    "-A", "--user-agent", "-e", "--referer", "-b", "--cookie", "-m", "--max-time",
    "--connect-timeout", "-w", "--write-out", "-x", "--proxy", "-K", "--config", "-E",
    "--cert", "--cacert", "--key", "-r", "--range", "--retry", "-Y", "-y", "-z", "-C",
    "--resolve", "--unix-socket", "-U", "--proxy-user", "--max-filesize", "-Q", "--quote",
    "--proto-default", "--hsts", "--alt-svc", "--url", "--variable", "--expand-url",
}  # fmt: skip


def _subcommand(
    table: dict[str, Classification | dict[str, Classification]],
    program: str,
    with_value: Iterable[str] = (),
    otherwise: Classification | None = None,
    flags: Iterable[str] = (),
) -> Callable[[Args], Classification]:
    """A rule for a program with subcommands (``etcdctl member list``): look up the first
    one or two operands (``*`` stands for any second one); ``otherwise`` judges a subcommand
    not in the table (by default: unknown). Options must be ``with_value`` or ``flags``:
    one it does not know might take the next word as its value."""
    known = {*with_value, *flags}

    def rule(args: Args) -> Classification:
        start, strange = _leading(args, with_value, known)
        if strange:
            return unknown(f"{program} is given an option it has no table for ({strange})")
        operands = [w for w in args.words[start:] if not w.startswith("-")]
        if not operands:
            return unknown(f"{program} without a command is interactive or does not say")
        if any(";" in w or "\n" in w for w in args.words):
            return unknown(f"{program} is given a word that could hold a second command")
        entry = table.get(operands[0].lower())
        if isinstance(entry, dict):
            second = args.words[start + 1].lower() if start + 1 < len(args.words) else ""
            if second.startswith("-"):
                return unknown(f"an option between {program}'s two command words")
            entry = entry.get(second, entry.get("*"))
        if entry is None:
            named = " ".join(operands[:2])
            return otherwise or unknown(f"{program} {named} is not in its table")
        return entry

    return rule


W = writes("it changes the cluster")

ETCDCTL = _subcommand(
    {
        "get": READ, "version": READ,
        "watch": unknown("etcdctl watch can run a command on each event"),
        "endpoint": {"status": READ, "health": READ, "hashkv": READ},
        "member": {"list": READ, "*": W}, "alarm": {"list": READ, "*": W},
        "lease": {"list": READ, "timetolive": READ, "*": W},
        "user": {"list": READ, "get": READ, "*": W}, "role": {"list": READ, "get": READ, "*": W},
        "auth": {"status": READ, "*": W}, "snapshot": {"status": READ, "*": W},
        "put": W, "del": W, "txn": W, "compaction": W, "defrag": W, "move-leader": W,
        "lock": W, "elect": W, "make-mirror": W, "check": W, "downgrade": W,
    },
    "etcdctl",
    ("-w", "--write-out", "--endpoints", "--command-timeout", "--dial-timeout", "--cacert",
     "--cert", "--key", "--user", "--password", "--keepalive-time", "--keepalive-timeout",
     "--limit", "--rev", "--sort-by", "--order", "--consistency"),
    flags=("--prefix", "--keys-only", "--print-value-only", "--count-only", "--from-key",
           "--hex", "--debug", "--insecure-transport", "--insecure-skip-tls-verify",
           "--cluster", "--physical", "-h", "--help"),
)  # fmt: skip
SUPERVISORCTL_VALUES = ("-c", "--configuration", "-s", "--serverurl", "-u", "--username", "-p",
                        "--password", "-r", "--history-file")  # fmt: skip
LAB_CONFIG = re.compile(r"(.*/labs/[^/]+/)?supervisord\.conf")
"""A lab's own supervisord.conf (root's): another config file could load plugins."""


def _supervisorctl(args: Args) -> Classification:
    found, _ = options(args, SUPERVISORCTL_VALUES)
    configs = [v or "" for n, v in found if n in ("-c", "--configuration")]
    if not all(LAB_CONFIG.fullmatch(config) for config in configs):
        return unknown("supervisorctl reads another config, which can load plugins")
    return SUPERVISORCTL(args)


SUPERVISORCTL = _subcommand(
    {"status": READ, "tail": READ, "avail": READ, "pid": READ, "version": READ, "help": READ,
     "maintail": READ},
    "supervisorctl", SUPERVISORCTL_VALUES,
    otherwise=writes("it starts, stops or changes the lab's programs"),
    flags=("-h", "--help", "-f"),
)  # fmt: skip
REDIS_READ = {
    "ping", "info", "get", "mget", "exists", "ttl", "pttl", "type", "keys", "scan", "dbsize",
    "strlen", "hget", "hgetall", "hkeys", "hlen", "hmget", "hvals", "hexists", "hscan",
    "lrange", "llen", "lindex", "smembers", "scard", "sismember", "sscan", "zrange",
    "zrangebyscore", "zrevrange", "zrevrangebyscore", "zcard", "zcount", "zscore", "zrank",
    "zscan", "xlen", "xrange", "xrevrange", "role", "time", "lastsave", "echo", "monitor",
    "getrange", "bitcount", "randomkey",
}  # fmt: skip
REDIS_READ_SUB = {
    "client": {"list", "info", "getname", "id"}, "config": {"get"}, "memory": {"usage", "stats",
    "doctor"}, "slowlog": {"get", "len"}, "latency": {"latest", "history", "doctor"},
    "command": {"count", "info", "docs", "list"}, "cluster": {"info", "nodes", "slots",
    "shards", "myid"}, "object": {"encoding", "freq", "idletime", "refcount"},
    "pubsub": {"channels", "numsub", "numpat"}, "xinfo": {"stream", "groups", "consumers"},
    "sentinel": {"masters", "master", "replicas", "slaves", "sentinels", "ckquorum",
    "get-master-addr-by-name", "myid", "info-cache"},
}  # fmt: skip
REDIS_VALUES = ("-h", "-p", "-a", "-n", "-u", "--user", "--pass", "--sni", "--cacert",
                "--cert", "--key", "-s", "-r", "-i", "-d", "--pattern", "--count")  # fmt: skip
REDIS_FLAGS = ("--raw", "--no-raw", "--no-auth-warning", "-c", "--tls", "-e", "--verbose",
               "--scan", "--bigkeys", "--memkeys", "--stat", "--latency", "--latency-history",
               "--latency-dist", "--rdb", "--pipe", "--eval", "--functions-rdb")  # fmt: skip


def _redis_cli(args: Args) -> Classification:
    start, strange = _leading(args, REDIS_VALUES, REDIS_FLAGS)
    if strange:
        return unknown(f"redis-cli is given an option it has no table for ({strange})")
    found, _ = options(Args(args.words[:start], frozenset()), REDIS_VALUES)
    operands = list(args.words[start:])
    names = _names(found)
    if names & {"--rdb", "--pipe", "--functions-rdb"}:
        return writes("redis-cli writes a dump or pipes commands in")
    if names & {"--eval"}:
        return unknown("redis-cli runs a Lua script")
    if names & {"--scan", "--bigkeys", "--memkeys", "--stat", "--latency", "--latency-history",
                "--latency-dist"}:  # fmt: skip
        return READ
    if not operands:
        return unknown("redis-cli without a command is interactive")
    command = operands[0].lower()
    if command in REDIS_READ:
        return READ
    sub = operands[1].lower() if len(operands) > 1 else ""
    if sub in REDIS_READ_SUB.get(command, set()):
        return READ
    return writes(f"redis-cli {' '.join(operands[:2])} is not a read command")


def _sql_read_only(sql: str) -> bool:
    """Only a single SELECT, SHOW, TABLE or EXPLAIN (not ANALYZE) statement that calls no
    function but a few known pure ones."""
    statement = sql.strip().rstrip(";").strip()
    if not statement or any(mark in statement for mark in (";", '"', "/*", "--", "\\")):
        return False  # several statements, quoted names, comments: not proved
    first = statement.split(None, 1)[0].lower()
    if first not in ("select", "show", "table", "explain", "values"):
        return False
    if first == "explain" and re.search(r"\banaly[sz]e\b", statement, re.I):
        return False
    if re.search(r"\b(into|for\s+(no\s+key\s+update|update|key\s+share|share))\b", statement,
                 re.I):  # fmt: skip
        return False
    calls = {m.lower() for m in re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\(", statement)}
    return calls <= PURE_SQL


PURE_SQL = {
    "count", "sum", "min", "max", "avg", "now", "coalesce", "extract", "date_trunc", "to_char",
    "age", "round", "lower", "upper", "length", "pg_size_pretty", "pg_database_size",
    "pg_relation_size", "pg_total_relation_size", "pg_is_in_recovery", "pg_current_wal_lsn",
    "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_wal_lsn_diff", "current_setting",
    "pg_postmaster_start_time", "version", "inet_server_addr", "pg_last_xact_replay_timestamp",
    "in", "exists", "any", "all", "array_agg", "string_agg", "greatest", "least", "abs",
}  # fmt: skip


def _psql(args: Args) -> Classification:
    found, operands = options(args, ("-c", "--command", "-f", "--file", "-h", "--host",
                                        "-p", "--port", "-U", "--username", "-d", "--dbname",
                                        "-o", "--output", "-L", "--log-file", "-v", "--set",
                                        "-P", "--pset", "-F", "-R"))  # fmt: skip
    if _hits(found, {"-o", "--output", "-L", "--log-file"}):
        return writes("psql writes a file")
    if _hits(found, {"-f", "--file"}):
        return unknown("psql runs SQL from a file")
    if any("=" in (v or "") for n, v in found if n in ("-d", "--dbname")) or any(
        "=" in operand for operand in operands
    ):
        return unknown("psql is given connection options, which can reach other servers")
    known = {"-c", "--command", "-h", "--host", "-p", "--port", "-U", "--username", "-d",
             "--dbname", "-v", "--set", "-P", "--pset", "-F", "-R", "-A", "-t", "-x", "-q",
             "-X", "-w", "--no-password", "--csv", "-H", "--html"}  # fmt: skip
    if strange := _unknown_options(found, known, "psql"):
        return strange
    statements = [v or "" for n, v in found if n in ("-c", "--command")]
    if not statements:
        return unknown("psql without -c is interactive")
    if not all(_sql_read_only(s) for s in statements):
        return unknown("it cannot prove the SQL read-only")
    return READ


RULES: dict[str, Callable[[Args], Classification]] = {
    "sed": _sed, "awk": _awk, "gawk": _awk, "mawk": _awk, "find": _find, "tee": _tee,
    "sort": _sort, "uniq": _uniq, "tar": _tar, "date": _date, "hostname": _hostname,
    "env": _env, "xargs": _xargs, "ss": _ss, "curl": _curl, "etcdctl": ETCDCTL,
    "supervisorctl": _supervisorctl, "redis-cli": _redis_cli, "psql": _psql,
    "timeout": _inner(("-s", "--signal", "-k", "--kill-after"), "timeout", leading=1,
                      flags=("--preserve-status", "--foreground", "-v", "--verbose")),
    "nice": _inner(("-n", "--adjustment"), "nice"), "time": _time, "printf": _printf,
    "test": _test, "[": _test,
    "xxd": _xxd,
    "stdbuf": _inner(("-i", "-o", "-e"), "stdbuf"),
    "journalctl": _needs({"--vacuum-size", "--vacuum-time", "--vacuum-files", "--rotate",
                          "--flush", "--sync", "--relinquish-var", "--smart-relinquish-var",
                          "--setup-keys", "--update-catalog", "--cursor-file"},
                         "journalctl", ("-u", "--since", "--until", "-p", "-o")),
    "systemctl": _subcommand({"status": READ, "show": READ, "list-units": READ, "is-active": READ,
                              "is-enabled": READ, "is-failed": READ, "cat": READ,
                              "list-unit-files": READ, "list-timers": READ},
                             "systemctl", otherwise=W,
                             flags=("--no-pager", "-l", "--full", "-a", "--all", "-q")),
    "ip": _subcommand({k: {"show": READ, "list": READ, "ls": READ, "get": READ, "": READ,
                           "*": W} for k in ("addr", "a", "address", "link", "l", "route", "r",
                                             "neigh", "n", "rule", "netns", "-br")},
                      "ip", ("-n", "-netns", "-f", "-family"),
                      flags=("-br", "-brief", "-4", "-6", "-s", "-d", "-j", "-p", "-c")),
    "nft": _subcommand({"list": READ}, "nft", otherwise=W, flags=("-a", "-n", "-s", "-j")),
    "patronictl": _subcommand({"list": READ, "show-config": READ, "history": READ,
                               "topology": READ, "version": READ, "dsn": READ},
                              "patronictl", ("-c", "--config-file", "-d", "--dcs-url"),
                              otherwise=W, flags=("-h", "--help")),
}  # fmt: skip
