//! Configuration files the loader refuses, each with what its error must
//! name: the field (`ConfigError::field`), or, where the TOML reader itself
//! refuses the file (a wrong type, an unknown key, bad syntax; the field is
//! then `config`), the words of its problem. One table for the policy's own
//! unit tests and for the lifecycle suite, which feeds each file to
//! `check-config`, `run` and `reload` and expects exit status 2 naming the
//! same thing.

/// (file, what its refusal names).
pub const REFUSED_FILES: &[(&str, &str)] = &[
    ("[[block]]\ncidr = \"10.0.0.0/33\"\n", "block[0].cidr"),
    ("[[block]]\ncidr = \"10.0.0.1/8\"\n", "block[0].cidr"),
    ("[[block]]\ncidr = \"not-an-address\"\n", "block[0].cidr"),
    ("[[block]]\ncidr = \"fd00::/129\"\n", "block[0].cidr"),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"icmp\"\n",
        "block[0].protocol",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nports = [80]\n",
        "block[0].ports",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = [0]\n",
        "block[0].ports[0]",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = [70000]\n",
        "block[0].ports[0]",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = []\n",
        "block[0].ports",
    ),
    ("block = []\n", "block"),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\n[[block]]\ncidr = \"10.0.0.0/8\"\n",
        "block[1]",
    ),
    ("[smtp]\nports = []\n", "smtp.ports"),
    ("[smtp]\nports = [0]\n", "smtp.ports[0]"),
    ("[smtp]\nports = [70000]\n", "smtp.ports[0]"),
    ("[smtp]\nports = [25, 25]\n", "smtp.ports[1]"),
    ("[smtp]\nrate = \"0/minute\"\n", "smtp.rate"),
    ("[smtp]\nrate = \"5/fortnight\"\n", "smtp.rate"),
    ("[smtp]\nrate = \"five/minute\"\n", "smtp.rate"),
    ("[smtp]\nrate = \"5\"\n", "smtp.rate"),
    ("[smtp]\nburst = 0\n", "smtp.burst"),
    ("[smtp]\nburst = -3\n", "smtp.burst"),
    ("[smtp]\nscope = \"everyone\"\n", "smtp.scope"),
    ("[attach]\ninterfaces = []\n", "attach.interfaces"),
    ("[attach]\ninterfaces = [\"\"]\n", "attach.interfaces[0]"),
    (
        "[attach]\ninterfaces = [\"docker0\", \"docker0\"]\n",
        "attach.interfaces[1]",
    ),
    ("[events]\nburst = 0\n", "events.burst"),
    ("[attach]\ntunnels = \"yes\"\n", "tunnels"),
    ("[smtp]\nover_limit = \"refuse\"\n", "smtp.over_limit"),
    ("[smtp]\nover_limit = 1\n", "over_limit"),
    ("[reject]\nrate = \"0/second\"\n", "reject.rate"),
    ("[reject]\nburst = 0\n", "reject.burst"),
    ("[reject]\nburst = 2000000\n", "reject.burst"),
    ("defaults = \"no\"\n", "defaults"),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n",
        "block[0].action",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nexcept_ports = []\n",
        "block[0].except_ports",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nexcept_ports = [0]\n",
        "block[0].except_ports[0]",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nexcept_ports = [53, 53]\n",
        "block[0].except_ports[1]",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = [80]\nexcept_ports = [53]\n",
        "block[0].except_ports",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nexcept_protocol = \"udp\"\n",
        "block[0].except_protocol",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nexcept_ports = [53]\nexcept_protocol = \"icmp\"\n",
        "block[0].except_protocol",
    ),
    (
        "[[block]]\ncidr = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nexcept_ports = [53]\nexcept_protocol = \"udp\"\n",
        "block[0].except_protocol",
    ),
    ("[[unblock]]\nname = \"nope\"\n", "unblock[0].name"),
    ("[[unblock]]\ncidr = \"10.0.0.0/8\"\n", "unblock[0].cidr"),
    ("[[unblock]]\ncidr = \"10.0.0.1/8\"\n", "unblock[0].cidr"),
    ("[[unblock]]\n", "unblock[0]"),
    (
        "[[unblock]]\nname = \"metadata\"\ncidr = \"169.254.169.254/32\"\n",
        "unblock[0]",
    ),
    (
        "[[unblock]]\nname = \"metadata\"\n[[unblock]]\ncidr = \"169.254.169.254/32\"\n",
        "unblock[1]",
    ),
    (
        "defaults = false\n[[unblock]]\nname = \"metadata\"\n",
        "unblock[0]",
    ),
    (
        "[[unblock]]\nname = \"metadata\"\nport = 1\n",
        "unknown field `port`",
    ),
    ("foo = 1\n", "unknown field `foo`"),
    ("[smtp]\nrat = \"5/minute\"\n", "unknown field `rat`"),
    ("dry_run = \"yes\"\n", "dry_run"),
    ("[smtp\n", "config"),
    ("[smtp]\nscope = \"x\"\n", "smtp.scope"),
    ("[attach]\ninterfaces = [\"a/b\"]\n", "attach.interfaces[0]"),
    (
        "[[unblock]]\nname = \"tencent\"\ncidr = \"169.254.0.23/32\"\n",
        "unblock[0]",
    ),
    (
        "[[unblock]]\nname = \"tencent\"\n[[unblock]]\nname = \"tencent\"\n",
        "unblock[1]",
    ),
    ("defaults = 1\n", "config"),
    ("[reject]\nenabled = true\n", "config"),
    ("[[unblock]]\nport = 1\n", "config"),
];
