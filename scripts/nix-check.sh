#!/usr/bin/env bash
# Offline checks of the Nix side of baf (flake.nix, flake.lock, nixos/).
#
# What needs no network: parsing, the lock's shape, that the lock matches
# flake.nix's inputs, and lazy evaluation that does not need nixpkgs. What
# needs Nix with network (nixpkgs itself) is listed in nixos/README.md:
# `nix flake check`, the VM test, the builds.
#
# Runs as root on Debian bookworm: installs Debian's nix-bin (Nix 2.8) when
# nix-instantiate is missing. Writes nothing in the repository. Prints
# "ok   NAME" or "FAIL NAME" per check; exits 1 if any check failed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

passes=0 failures=0
ok() {
  printf 'ok   %s\n' "$1"
  passes=$((passes + 1))
}
fail() {
  printf 'FAIL %s\n' "$1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/     /'
  failures=$((failures + 1))
}
# check NAME COMMAND...: runs COMMAND, shows its output only when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$out"; fi
}

if ! command -v nix-instantiate >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y --no-install-recommends nix-bin >/tmp/nix-check-apt.log 2>&1 ||
    { apt-get update >>/tmp/nix-check-apt.log 2>&1 &&
      apt-get install -y --no-install-recommends nix-bin >>/tmp/nix-check-apt.log 2>&1; }; then
    ok "install nix-bin"
  else
    fail "install nix-bin" "$(tail -n 5 /tmp/nix-check-apt.log)"
    echo "nix-check: 0 passed, 1 failed"
    exit 1
  fi
fi

# A throwaway HOME and no build users: Debian's nix.conf names the group
# nixbld, which a bare nix-bin install does not create, and nothing here builds.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home" XDG_CACHE_HOME="$scratch/cache"
mkdir -p "$HOME"
export NIX_CONFIG=$'build-users-group =\nexperimental-features = nix-command flakes'

nix_files=(flake.nix nixos/*.nix)

# 1. Every Nix file parses.
for f in "${nix_files[@]}"; do
  check "parse $f" nix-instantiate --parse "$f"
done

# 2. The lock's shape: version 7, every input locked to a full GitHub rev
#    with an SRI sha256 narHash and an integer lastModified.
check "flake.lock shape" python3 - <<'EOF'
import json, re, sys
lock = json.load(open("flake.lock"))
errors = []
if lock.get("version") != 7:
    errors.append(f"version is {lock.get('version')!r}, want 7")
root = lock.get("root")
nodes = lock.get("nodes", {})
if root not in nodes:
    errors.append("root node missing")
others = {k: v for k, v in nodes.items() if k != root}
if not others:
    errors.append("no input is locked")
for name, node in others.items():
    l = node.get("locked", {})
    if l.get("type") != "github":
        errors.append(f"{name}: type {l.get('type')!r}, want 'github'")
    if not re.fullmatch(r"[0-9a-f]{40}", str(l.get("rev", ""))):
        errors.append(f"{name}: rev {l.get('rev')!r} is not 40 hex digits")
    if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", str(l.get("narHash", ""))):
        errors.append(f"{name}: narHash {l.get('narHash')!r} is not an SRI sha256")
    if type(l.get("lastModified")) is not int:
        errors.append(f"{name}: lastModified {l.get('lastModified')!r} is not an integer")
    if not (l.get("owner") and l.get("repo")):
        errors.append(f"{name}: owner/repo missing")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF

# The pin nixos/README.md documents ("How nixpkgs is pinned") is the lock's.
check "nixos/README.md documents the locked nixpkgs" python3 - <<'EOF'
import datetime, json, sys
lock = json.load(open("flake.lock"))
l = lock["nodes"][lock["nodes"][lock["root"]]["inputs"]["nixpkgs"]]["locked"]
doc = open("nixos/README.md").read()
day = datetime.datetime.fromtimestamp(l["lastModified"], datetime.timezone.utc).date().isoformat()
missing = [f"{k} {v}" for k, v in [("rev", l["rev"]), ("narHash", l["narHash"]),
           ("lastModified", str(l["lastModified"])), ("date", day)] if v not in doc]
for m in missing:
    print(f"nixos/README.md does not name the lock's {m}")
sys.exit(1 if missing else 0)
EOF

# 3. The lock matches flake.nix's inputs. Nix 2.8 checks that itself: with
#    --no-update-lock-file it refuses a lock that flake.nix's inputs would
#    change. It reads only flake.nix and flake.lock, so they are copied to a
#    scratch directory: a git flake would ignore files not yet committed, and
#    path:. would copy target/ into the store. Locked inputs are not fetched.
mkdir -p "$scratch/flake"
cp flake.nix flake.lock "$scratch/flake/"
check "flake.lock matches flake.nix (nix flake metadata --offline)" \
  timeout 120 nix flake metadata --offline --no-update-lock-file "path:$scratch/flake"
# The same agreement spelled out, so that a mismatch says what differs
# (with no network, Nix's own refusal above reads as a failed download).
nix-instantiate --eval --strict --json --expr '(import ./flake.nix).inputs' \
  >"$scratch/inputs.json" 2>"$scratch/inputs.err" || cp "$scratch/inputs.err" "$scratch/inputs.json"
check "flake.nix inputs agree with flake.lock's root inputs" python3 - "$scratch/inputs.json" <<'EOF'
import json, sys
inputs = json.load(open(sys.argv[1]))
lock = json.load(open("flake.lock"))
nodes = lock["nodes"]
root = nodes[lock["root"]].get("inputs", {})
errors = []
if sorted(inputs) != sorted(root):
    errors.append(f"flake.nix inputs {sorted(inputs)} != flake.lock root inputs {sorted(root)}")
for name, spec in inputs.items():
    url = spec.get("url", "")
    kind, _, rest = url.partition(":")
    parts = rest.split("/")
    want = {"type": kind, "owner": parts[0] if parts else None,
            "repo": parts[1] if len(parts) > 1 else None}
    if len(parts) > 2:
        want["ref"] = parts[2]
    node = nodes.get(root.get(name, ""), {})
    if node.get("original") != want:
        errors.append(f"{name}: flake.nix says {url}, flake.lock's original is {node.get('original')}")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF

# 4. Lazy evaluation that needs no nixpkgs.
eval_true() { # eval_true NAME EXPR: EXPR must evaluate to true
  local name=$1 out
  if out=$(nix-instantiate --eval --strict --expr "$2" 2>&1) && [ "$out" = true ]; then
    ok "$name"
  else
    fail "$name" "$out"
  fi
}
eval_true "flake outputs is a function of self and nixpkgs" \
  'builtins.functionArgs (import ./flake.nix).outputs == { self = false; nixpkgs = false; }'
eval_true "nixos/module.nix is a NixOS module function" \
  'let f = import ./nixos/module.nix; in builtins.isFunction f
     && builtins.all (a: builtins.hasAttr a (builtins.functionArgs f)) [ "config" "options" "lib" "pkgs" ]'
eval_true "nixos/fanout.nix takes a kernel package set's arguments" \
  'builtins.attrNames (builtins.functionArgs (import ./nixos/fanout.nix)) == [ "kernel" "kernelModuleMakeFlags" "lib" ]'
eval_true "nixos/tools.nix takes lib, stdenv, rustPlatform and installShellFiles" \
  'builtins.attrNames (builtins.functionArgs (import ./nixos/tools.nix)) == [ "installShellFiles" "lib" "rustPlatform" "stdenv" ]'
eval_true "nixos/test.nix and module-check.nix take pkgs" \
  'builtins.functionArgs (import ./nixos/test.nix) == { pkgs = false; }
     && builtins.functionArgs (import ./nixos/module-check.nix) == { pkgs = false; }'
# The flake's outputs, evaluated against a stand-in for nixpkgs that has only
# the two lib functions flake.nix calls: the attribute names are lazy, so this
# shows the output tree without nixpkgs.
eval_true "flake output names" '
  let
    stub = {
      lib = {
        genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
        optionalAttrs = cond: attrs: if cond then attrs else { };
      };
      legacyPackages = { };
    };
    out = (import ./flake.nix).outputs { self = out; nixpkgs = stub; };
    names = builtins.attrNames;
    systems = [ "aarch64-linux" "x86_64-linux" ];
  in
  names out == [ "checks" "devShells" "nixosModules" "overlays" "packages" ]
  && names out.packages == systems
  && names out.packages.x86_64-linux == [ "baf-tools" "default" "fanout" ]
  && names out.checks.x86_64-linux == [ "baf-tools" "fanout" "module" "vm-test" ]
  && names out.checks.aarch64-linux == [ "baf-tools" "fanout" "module" ]
  && names out.devShells.x86_64-linux == [ "default" ]
  && builtins.isFunction out.overlays.default
  && builtins.isFunction out.nixosModules.default'

# The kernel range (7.2 and 7.3) and Rust: module.nix's assertions, its
# default kernel, the rust kernel patch of enableKernelRust, and fanout.nix's
# `broken`, evaluated against a stand-in for the few nixpkgs lib functions
# they use, for kernel package sets, and for NixOS's boot.kernelPackages.
kernel_stub='
  let
    lib = {
      mkIf = condition: content: { _type = "if"; inherit condition content; };
      mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
      mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (builtins.attrNames attrs);
      genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
      splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
      any = builtins.any;
      optional = c: x: if c then [ x ] else [ ];
      concatStringsSep = builtins.concatStringsSep;
      versionOlder = a: b: builtins.compareVersions a b < 0;
      versionAtLeast = a: b: builtins.compareVersions a b >= 0;
      findFirst = pred: default: list:
        let found = builtins.filter pred list; in if found == [ ] then default else builtins.head found;
      fileset = { toSource = x: x; unions = x: x; fileFilter = f: d: d; };
      importTOML = p: builtins.fromTOML (builtins.readFile p);
      licenses.gpl2Only = null;
      mkOption = o: o;
    };
    kp = version: withRust: { kernel = { inherit version withRust; }; };
    # pkgs with the given kernel package sets (name -> version)
    pkgsWith = sets: builtins.mapAttrs (_: v: kp v true) sets // { writeTextFile = x: x; callPackage = _: _: null; };
    cfg = { enable = true; topics = [ ]; bufferSize = 65536; testTopic = true; };
    # The module in a stand-in for NixOS. boot.kernelPackages is made the
    # way NixOS makes it: the package set it is given (`base`, which is
    # what options.boot.kernelPackages merges) with the boot.kernelPatches
    # of the module applied, where features.rust turns Rust on (unless
    # `rustAvailable` is false, as nixpkgs does where rustc is missing). The
    # patches are read back from the result of the module, so a module that
    # decided them from config.boot.kernelPackages would recurse forever here.
    evalFull = { sets, kernel, withRust ? true, enableKernelRust ? true, rustAvailable ? true }:
      let
        base = kp kernel withRust;
        patchesDef = out.boot.kernelPatches or { condition = false; };
        patches = if patchesDef.condition then patchesDef.content else [ ];
        final.kernel = base.kernel // {
          withRust = base.kernel.withRust
            || (rustAvailable && builtins.any (p: p.features.rust or false) patches);
        };
        out = (import ./nixos/module.nix {
          inherit lib;
          pkgs = pkgsWith sets;
          config = {
            baf.services.baf-setup = cfg // { inherit enableKernelRust; package = null; kernelModulePackage = null; };
            boot.kernelPackages = final;
            services = { };
          };
          options.boot.kernelPackages = {
            loc = [ "boot" "kernelPackages" ];
            definitionsWithLocations = [ { file = "stand-in"; value = base; } ];
            type.merge = loc: defs: if builtins.length defs == 1 then (builtins.head defs).value else throw "one definition";
          };
        }).config.content;
      in
      { config = out; inherit patches; inherit (final) kernel; };
    eval = sets: kernel: (evalFull { inherit sets kernel; }).config;
    module = import ./nixos/module.nix { inherit lib; pkgs = { }; config = { }; options = { }; };
    failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
    fanout = kernel:
      (import ./nixos/fanout.nix {
        inherit lib;
        kernel = kernel // { stdenv.mkDerivation = a: a; moduleBuildDependencies = [ ]; dev = ""; modDirVersion = kernel.version; };
        kernelModuleMakeFlags = [ ];
      });
    broken = version: withRust: (fanout { inherit version withRust; }).meta.broken;
    rustPatch = { name = "rust"; patch = null; features.rust = true; };
    sets72 = { linuxPackages_7_2 = "7.2.8"; linuxPackages_latest = "7.2.8"; };
  in'
eval_true "module.nix: kernels 7.2 and 7.3 pass, others fail with the version and the fix" "$kernel_stub"'
  failed (eval { linuxPackages_7_3 = "7.3.4"; } "7.2.12") == [ ]
  && failed (eval { linuxPackages_7_3 = "7.3.4"; } "7.3") == [ ]
  && failed (eval { linuxPackages_7_3 = "7.3.4"; } "6.18.40") == [
    "baf: fanout.ko supports Linux 7.2 and 7.3 (the kernels its test suite runs on), but boot.kernelPackages is Linux 6.18.40. Set boot.kernelPackages = pkgs.linuxPackages_7_3; (or leave boot.kernelPackages unset: with baf enabled it defaults to that)."
  ]
  && builtins.length (failed (eval { linuxPackages_7_3 = "7.3.4"; } "7.4.1")) == 1
  && builtins.length (failed (eval { linuxPackages_7_3 = "7.3.4"; } "7.4-rc2")) == 1
  && builtins.match ".*This nixpkgs has no Linux 7.2 or 7.3 package set.*"
       (builtins.head (failed (eval { linuxPackages_latest = "7.1.10"; } "7.1.10"))) != null'
eval_true "module.nix: the default kernel is the newest 7.2 or 7.3 package set" "$kernel_stub"'
  let default = sets: (eval sets "7.3.4").boot.kernelPackages; in
  (default { linuxPackages_7_3 = "7.3.4"; linuxPackages_7_2 = "7.2.12"; linuxPackages_latest = "7.3.4"; }).content.content.kernel.version == "7.3.4"
  && (default { linuxPackages_7_2 = "7.2.12"; linuxPackages_latest = "7.2.12"; }).content.content.kernel.version == "7.2.12"
  && (default { linuxPackages_latest = "7.3.1"; }).content.content.kernel.version == "7.3.1"
  && (default { linuxPackages_7_2 = "7.2.12"; linuxPackages_latest = "7.4.2"; }).content.content.kernel.version == "7.2.12"
  && !(default { linuxPackages_latest = "7.1.10"; }).condition'
eval_true "fanout.nix: broken outside 7.2 and 7.3 and without Rust" "$kernel_stub"'
  !(broken "7.2" true) && !(broken "7.2.12" true) && !(broken "7.3.4" true)
  && broken "7.1.10" true && broken "6.18.40" true && broken "7.4" true && broken "7.4-rc1" true
  && broken "7.3.4" false'
eval_true "module.nix: enableKernelRust (default) adds the rust kernel patch to a kernel without Rust" "$kernel_stub"'
  let r = evalFull { sets = sets72; kernel = "7.2.8"; withRust = false; }; in
  module.options.baf.services.baf-setup.enableKernelRust.default == true
  && r.patches == [ rustPatch ]
  && r.kernel.withRust
  && failed r.config == [ ]
  && !(fanout r.kernel).meta.broken'
eval_true "module.nix: no rust kernel patch for a kernel with Rust, or an unsupported one" "$kernel_stub"'
  let
    withRust = evalFull { sets = sets72; kernel = "7.2.8"; withRust = true; };
    old = evalFull { sets = sets72; kernel = "6.18.40"; withRust = false; };
  in
  withRust.patches == [ ] && failed withRust.config == [ ]
  && old.patches == [ ] && builtins.length (failed old.config) == 1'
eval_true "module.nix: enableKernelRust = false keeps the assertion, naming the option" "$kernel_stub"'
  let r = evalFull { sets = sets72; kernel = "7.2.8"; withRust = false; enableKernelRust = false; }; in
  r.patches == [ ]
  && failed r.config == [
    "baf: fanout.ko is a Rust-for-Linux module, but the kernel of boot.kernelPackages (Linux 7.2.8) is built without CONFIG_RUST. Set baf.services.baf-setup.enableKernelRust = true; to have baf turn Rust on (the kernel is then built locally, not taken from the binary cache), or use a kernel with RUST = yes in its structuredExtraConfig."
  ]'
eval_true "module.nix: a kernel that stays without Rust despite the patch is refused" "$kernel_stub"'
  let r = evalFull { sets = sets72; kernel = "7.2.8"; withRust = false; rustAvailable = false; }; in
  r.patches == [ rustPatch ]
  && builtins.match ".*Linux 7.2.8.*even with the kernel patch .rust. .features.rust = true. that baf.services.baf-setup.enableKernelRust adds.*"
       (builtins.head (failed r.config)) != null
  && builtins.length (failed r.config) == 1'

# The bridges (bridge.nix), evaluated against a stand-in for the nixpkgs lib
# functions and option types it uses, every option at its default unless
# given: safe defaults (nothing exported, no scouting, no gossip, no
# listening, no authentication), the credentials of authentication, the
# assertions and the warning of an open unauthenticated endpoint. The
# configuration file is read back from ExecStart (the stand-in writeText
# keeps the text).
bridge_stub='
  let
    lib = rec {
      types = {
        bool = "bool"; str = "str"; anything = "anything";
        listOf = t: t; nullOr = t: t; enum = l: l; attrsOf = t: t; submodule = f: f;
      };
      mkOption = o: o // { _type = "option"; };
      literalExpression = x: x;
      filterAttrs = p: a: builtins.listToAttrs (builtins.filter (x: p x.name x.value)
        (map (name: { inherit name; value = a.${name}; }) (builtins.attrNames a)));
      concatMap = f: l: builtins.concatLists (map f l);
      concatLists = builtins.concatLists;
      optional = c: x: if c then [ x ] else [ ];
      optionals = c: x: if c then x else [ ];
      optionalAttrs = c: a: if c then a else { };
      toInt = builtins.fromJSON;
      getExe'"'"' = _: name: "/bin/${name}";
      escapeShellArgs = args: args;
      nameValuePair = name: value: { inherit name value; };
      mapAttrs'"'"' = f: a: builtins.listToAttrs (map (n: f n a.${n}) (builtins.attrNames a));
      mapAttrsToList = f: a: map (n: f n a.${n}) (builtins.attrNames a);
      mkIf = condition: content: { _type = "if"; inherit condition content; };
      any = builtins.any; all = builtins.all; attrValues = builtins.attrValues;
      hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    };
    pkgs.writeText = name: text: { outPath = text; };
    module = bridges: import ./nixos/bridge.nix {
      inherit lib pkgs;
      config = {
        baf.services.baf-setup = { enable = true; package = null; };
        baf.services.bridges = bridges;
        networking.hostName = "host";
      };
    };
    # The bridges as NixOS would see them: every option at its default
    # unless given.
    bridgeOpts = (module { }).options.baf.services.bridges.type { name = "x"; };
    fill = opts: given: builtins.mapAttrs (n: o:
      if (o._type or null) == "option" then given.${n} or o.default else fill o (given.${n} or { })) opts;
    eval = given: (module (builtins.mapAttrs (_: fill bridgeOpts.options) given)).config.content;
    # The configuration file of a bridge, read back from ExecStart.
    file = c: name: builtins.fromJSON (builtins.elemAt c.systemd.services.${name}.serviceConfig.ExecStart 2);
    failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  in'
eval_true "bridge.nix: safe defaults (nothing exported, no scouting, no gossip, no listening, no auth; the shared sandbox)" "$bridge_stub"'
  let
    c = eval { plain = { import = [ "baf/**" ]; connect = [ "tcp/h:7447" ]; }; };
    f = file c "baf-bridge-plain";
    s = c.systemd.services.baf-bridge-plain.serviceConfig;
  in
  f.export == [ ] && f.zenoh.multicast_scouting == false && f.zenoh.gossip == false
  && f.zenoh.listen == [ ] && f.zenoh.auth == { }
  && s.LoadCredential == [ ]
  && s.DynamicUser && s.NoNewPrivileges && s.ProtectSystem == "strict" && s.DevicePolicy == "closed"
  && s.DeviceAllow == [ "char-baf rw" ] && s.SupplementaryGroups == [ "baf" ]
  && failed c == [ ] && c.warnings == [ ] && c.networking.firewall.allowedUDPPorts == [ ]'
eval_true "bridge.nix: authentication files are systemd credentials, named relative in its configuration file" "$bridge_stub"'
  let
    c = eval {
      lab = {
        export = [ "sensors/#" ];
        listen = [ "tcp/0.0.0.0:7447" ];
        openFirewall = true;
        auth = { user = "robot-1"; passwordFile = "/etc/baf/bridge/pw"; usersFile = "/etc/baf/bridge/users"; };
      };
    };
  in
  (file c "baf-bridge-lab").zenoh.auth == { user = "robot-1"; password_file = "password"; users_file = "users"; }
  && c.systemd.services.baf-bridge-lab.serviceConfig.LoadCredential
     == [ "password:/etc/baf/bridge/pw" "users:/etc/baf/bridge/users" ]
  && failed c == [ ] && c.warnings == [ ] && c.networking.firewall.allowedTCPPorts == [ 7447 ]'
eval_true "bridge.nix: refusals (nothing to bridge, no endpoint, half of auth, a secret in the store) and the open-endpoint warning" "$bridge_stub"'
  let
    c = eval {
      idle = { };
      half = { import = [ "baf/**" ]; connect = [ "tcp/h:7447" ]; auth.user = "me"; };
      store = { import = [ "baf/**" ]; connect = [ "tcp/h:7447" ]; auth.usersFile = "/nix/store/x-users"; };
      open = { import = [ "baf/**" ]; listen = [ "tcp/0.0.0.0:7447" ]; openFirewall = true; multicastScouting = true; };
    };
  in
  failed c == [
    "baf bridge `half'"'"': auth.user and auth.passwordFile go together."
    "baf bridge `idle'"'"': give topics to export or keys to import (export, import); nothing is exported by default."
    "baf bridge `idle'"'"': give Zenoh endpoints to listen on or connect to (listen, connect), or turn on multicastScouting."
    "baf bridge `store'"'"': auth.passwordFile and auth.usersFile must not be in the Nix store (everyone can read it)."
  ]
  && builtins.length c.warnings == 1
  && builtins.match "baf bridge .open.: its listen endpoints are open in the firewall without auth.usersFile.*" (builtins.head c.warnings) != null
  && c.networking.firewall.allowedUDPPorts == [ 7446 ]
  && (file c "baf-bridge-open").zenoh.multicast_scouting'

# The recorders (recorder.nix), evaluated the same way: the command line
# each option makes, the state directory or the directory given, the
# hardening (no network, the baf devices read-only), the dashcam's reload
# trigger, and the refusals.
recorder_stub='
  let
    lib = rec {
      types = {
        bool = "bool"; str = "str"; ints.positive = "int";
        listOf = t: t; nullOr = t: t; enum = l: l; attrsOf = t: t; submodule = f: f;
      };
      mkOption = o: o // { _type = "option"; };
      literalExpression = x: x;
      filterAttrs = p: a: builtins.listToAttrs (builtins.filter (x: p x.name x.value)
        (map (name: { inherit name; value = a.${name}; }) (builtins.attrNames a)));
      concatMap = f: l: builtins.concatLists (map f l);
      concatLists = builtins.concatLists;
      optional = c: x: if c then [ x ] else [ ];
      optionals = c: x: if c then x else [ ];
      getExe'"'"' = _: name: "/bin/${name}";
      escapeShellArgs = args: args;
      nameValuePair = name: value: { inherit name value; };
      mapAttrs'"'"' = f: a: builtins.listToAttrs (map (n: f n a.${n}) (builtins.attrNames a));
      mapAttrsToList = f: a: map (n: f n a.${n}) (builtins.attrNames a);
      mkIf = condition: content: { _type = "if"; inherit condition content; };
      hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
      removePrefix = p: s: if hasPrefix p s
        then builtins.substring (builtins.stringLength p) (builtins.stringLength s) s else s;
    };
    pkgs.coreutils = "/coreutils";
    module = recorders: import ./nixos/recorder.nix {
      inherit lib pkgs;
      config = {
        baf.services.baf-setup = { enable = true; package = null; };
        baf.services.recorders = recorders;
      };
    };
    recOpts = name: (module { }).options.baf.services.recorders.type { inherit name; };
    fill = opts: given: builtins.mapAttrs (n: o:
      if (o._type or null) == "option" then given.${n} or o.default else fill o (given.${n} or { })) opts;
    eval = given: (module (builtins.mapAttrs (n: fill (recOpts n).options) given)).config.content;
    svc = c: name: c.systemd.services."baf-recorder-${name}".serviceConfig;
    failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  in'
eval_true "recorder.nix: a plain recorder: its topics, its state directory, no network, devices read-only" "$recorder_stub"'
  let c = eval { robot = { topics = [ "robot/#" ]; exclude = [ "robot/debug" ]; splitTime = "1h"; maxFiles = 24; }; };
      s = svc c "robot";
  in
  s.ExecStart == [ "/bin/baf-record" "record" "robot/#" "-e" "robot/debug" "-o" "/var/lib/baf-record/robot/"
    "--prefix" "robot" "--compression" "none" "--split-time" "1h" "--max-files" "24" ]
  && s.StateDirectory == "baf-record/robot" && !(s ? ReadWritePaths)
  && s.PrivateNetwork && s.DeviceAllow == [ "char-baf r" ] && s.DynamicUser
  && s.SupplementaryGroups == [ "baf" ] && s.ProtectSystem == "strict"
  && failed c == [ ]'
eval_true "recorder.nix: a dashcam elsewhere: its flags, its directory writable, reload is the trigger" "$recorder_stub"'
  let c = eval { cam = { topics = [ "cam/#" ]; directory = "/srv/crashes"; lossless = true; compression = "zstd";
                         dashcam = { enable = true; before = "20s"; triggers = [ "alarms" ]; }; }; };
      s = svc c "cam";
  in
  s.ExecStart == [ "/bin/baf-record" "record" "cam/#" "-o" "/srv/crashes/" "--prefix" "cam" "--compression" "zstd"
    "--lossless" "--before" "20s" "--after" "10s" "--max-memory" "64M" "--trigger" "alarms" ]
  && s.ReadWritePaths == [ "/srv/crashes" ] && !(s ? StateDirectory)
  && s.ExecReload == "/coreutils/bin/kill -USR1 $MAINPID"
  && failed c == [ ]'
eval_true "recorder.nix: refusals (no topics, split with a dashcam, triggers without it, a relative directory)" "$recorder_stub"'
  let c = eval {
        none = { };
        split = { topics = [ "a" ]; splitSize = "1M"; dashcam.enable = true; };
        trig = { topics = [ "a" ]; dashcam.triggers = [ "b" ]; };
        rel = { topics = [ "a" ]; directory = "rec"; };
      };
  in
  failed c == [
    "baf recorder `none'"'"': give topics to record (topics); \"#\" records every topic."
    "baf recorder `rel'"'"': directory must be an absolute path outside the Nix store."
    "baf recorder `split'"'"': splitSize and splitTime do not apply to a dashcam (each trigger makes one file)."
    "baf recorder `trig'"'"': dashcam.triggers needs dashcam.enable = true."
  ]'

# 5. The tools' source filter lists every Cargo workspace member.
check "nixos/tools.nix covers the Cargo workspace" python3 - <<'EOF'
import re, sys, tomllib
members = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]
src = open("nixos/tools.nix").read()
missing = [m for m in members
           if not re.search(r"\.\./" + re.escape(m) + r"(/|\s)", src)]
for m in missing:
    print(f"workspace member {m} is not in nixos/tools.nix's fileset")
sys.exit(1 if missing else 0)
EOF

# 6. The udev rule gives the control device to group baf and leaves the
#    topic nodes (owned as the kernel made them) alone.
check "nixos/99-baf.rules" python3 - <<'EOF'
import sys
rules = [l.strip() for l in open("nixos/99-baf.rules") if l.strip() and not l.lstrip().startswith("#")]
want = ['KERNEL=="baf-control", GROUP="baf", MODE="0660"']
if rules != want:
    print(f"rules are {rules!r}, want {want!r}")
    sys.exit(1)
EOF

echo "nix-check: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
