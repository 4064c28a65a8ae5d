# NixOS module of baf: loads fanout.ko and creates the declared topics at boot;
# bridge.nix and recorder.nix (imported below) run baf-bridge and
# baf-record services.
#
# Options live under baf.services.baf-setup, as in the original baf. They do
# not touch nixpkgs' services.fanout / linuxPackages.fanout, which are the
# unrelated C module of the same name (the two cannot be loaded together).
{
  config,
  options,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.baf.services.baf-setup;
  inherit (lib) types;

  isPowerOfTwo = n: n > 0 && builtins.bitAnd n (n - 1) == 0;

  ringSize =
    types.addCheck (types.ints.between 16384 67108864) isPowerOfTwo
    // {
      description = "power of two from 16384 to 67108864 (16 KiB to 64 MiB)";
    };

  # A topic name: 1-64 of [A-Za-z0-9._-] in all, optionally in "/"-separated levels.
  validName =
    name:
    let
      levels = lib.splitString "/" name;
    in
    builtins.stringLength name <= 64
    && builtins.match "[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*" name != null
    && !(lib.any (l: l == "." || l == "..") levels);

  topicOptions = {
    options = {
      bufferSize = lib.mkOption {
        type = ringSize;
        default = cfg.bufferSize;
        defaultText = lib.literalExpression "config.baf.services.baf-setup.bufferSize";
        example = 1048576;
        description = "Ring buffer size of this topic, in bytes.";
      };
      recordMax = lib.mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 16384;
        description = ''
          Largest record of this topic, in bytes: from 4096 to a quarter of
          {option}`bufferSize`. `null` leaves it to the kernel, which uses a
          quarter of the ring.
        '';
      };
      mode = lib.mkOption {
        type = types.strMatching "0?[0-7]{3}";
        default = "0660";
        example = "0640";
        description = "Permission bits of the topic's node {file}`/dev/baf/<name>`.";
      };
      group = lib.mkOption {
        type = types.str;
        default = "baf";
        example = "sensors";
        description = ''
          Group owning the topic's node. Its members may read and write the
          topic (with the default mode). The group must exist.
        '';
      };
      owner = lib.mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "sensord";
        description = "User owning the topic's node; `null` means root.";
      };
      lossless = lib.mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether readers of this topic may be lossless: a writer then
          waits for them instead of overwriting records they have not read
          (lossy readers are not affected). Off, no reader can hold a
          writer up.
        '';
      };
      stallTimeoutMs = lib.mkOption {
        type = types.nullOr types.int;
        default = null;
        example = 2000;
        description = ''
          Stall timeout of a {option}`lossless` topic, in milliseconds
          (1 to 3600000): a lossless reader that holds a writer up this long
          is demoted to lossy, and its next read fails once so it learns
          that it lost records. `null`: the default, 10 seconds (the timeout
          is never off: only root can turn it off, with baf-setup's `never`).
        '';
      };
    };
  };

  # Both forms of `topics` as one attribute set of settings.
  topics =
    if builtins.isList cfg.topics then
      lib.genAttrs cfg.topics (_: {
        inherit (cfg) bufferSize;
        recordMax = null;
        mode = "0660";
        group = "baf";
        owner = null;
        lossless = false;
        stallTimeoutMs = null;
      })
    else
      cfg.topics;

  topicLine =
    name: t:
    lib.concatStringsSep " " (
      [
        name
        "size=${toString t.bufferSize}"
      ]
      ++ lib.optional (t.recordMax != null) "record_max=${toString t.recordMax}"
      ++ [
        "mode=${t.mode}"
        "group=${t.group}"
      ]
      ++ lib.optional (t.owner != null) "owner=${t.owner}"
      ++ lib.optional t.lossless "lossless"
      ++ lib.optional (t.stallTimeoutMs != null) "stall_timeout=${toString t.stallTimeoutMs}ms"
    );

  # fanout.ko supports Linux 7.2 and 7.3, the kernels the test suite runs on
  # (fanout.nix marks other kernels broken; the assertions below say so first,
  # with the fix, instead of a build failure).
  kernelSupported = kernel: !(lib.versionOlder kernel.version "7.2" || lib.versionAtLeast kernel.version "7.4");
  kernelHasRust = kernel: kernel.withRust or (kernel.config.isYes "RUST");

  # The newest supported kernel package set this nixpkgs has, or null.
  # tryEval: a removed kernel is an alias that throws.
  supportedKernelPackages =
    let
      candidates = [
        "linuxPackages_7_3"
        "linuxPackages_7_2"
        "linuxPackages_latest"
      ];
      usable =
        name:
        let
          r = builtins.tryEval (pkgs ? ${name} && kernelSupported pkgs.${name}.kernel);
        in
        r.success && r.value;
    in
    lib.findFirst usable null candidates;

  kernel = config.boot.kernelPackages.kernel;

  # Rust in the kernel (option enableKernelRust). fanout.ko needs
  # CONFIG_RUST; whether nixpkgs builds a given kernel with it is not
  # something this module can count on, so it can turn it on itself, the
  # way nixpkgs' own kernel-rust NixOS test does: a kernel patch with no
  # patch file and features.rust = true, which makes nixpkgs' kernel config
  # set RUST=y.
  rustKernelPatch = {
    name = "rust";
    patch = null;
    features.rust = true;
  };
  # When to add it cannot be decided from `kernel` above: NixOS makes
  # config.boot.kernelPackages from the package set it is given plus
  # config.boot.kernelPatches (the option's `apply`), so reading
  # config.boot.kernelPackages.kernel.withRust to decide boot.kernelPatches
  # is an infinite recursion. It is decided from the base package set
  # instead: the definitions of boot.kernelPackages, merged the way the
  # option merges them but without its `apply`, so without any
  # kernelPatches. That is the user's kernel when they choose one, and the
  # module's default (below) otherwise; it reads neither
  # config.boot.kernelPackages nor config.boot.kernelPatches.
  # The patch is added only when that kernel lacks Rust: on a kernel that has
  # it, the patch would change the kernel's derivation and cost a local
  # kernel build for nothing. (A rust patch the configuration adds itself is
  # not seen here, since it is not in the base; baf then adds a second one,
  # which does no harm: that kernel is built locally either way.)
  baseKernel =
    let
      opt = options.boot.kernelPackages;
    in
    (opt.type.merge opt.loc opt.definitionsWithLocations).kernel;
  addRustPatch = cfg.enableKernelRust && kernelSupported baseKernel && !(kernelHasRust baseKernel);

  udevRules = pkgs.writeTextFile {
    name = "baf-udev-rules";
    destination = "/lib/udev/rules.d/99-baf.rules";
    text = builtins.readFile ./99-baf.rules;
  };
in
{
  # baf.services.bridges: baf-bridge services (topics over Zenoh);
  # baf.services.recorders: baf-record services (topics to MCAP files).
  imports = [
    ./bridge.nix
    ./recorder.nix
  ];

  options.baf.services.baf-setup = {
    enable = lib.mkEnableOption "baf, publish/subscribe topics as kernel character devices (fanout.ko)";

    topics = lib.mkOption {
      type = types.either (types.listOf types.str) (types.attrsOf (types.submodule topicOptions));
      default = [ ];
      example = lib.literalExpression ''
        {
          sensors = { bufferSize = 1048576; };
          "robot/arm/joint1" = { mode = "0640"; group = "robot"; };
          jobs = { lossless = true; stallTimeoutMs = 2000; };
        }
      '';
      description = ''
        Topics to create at boot, as {file}`/dev/baf/<name>`: either a list of
        names (each with the default size, mode 0660 and group `baf`) or an
        attribute set from name to settings. A name is 1-64 of
        `[A-Za-z0-9._-]`, optionally in `/`-separated levels.

        The set is exact: {command}`baf-setup apply` also removes topics that
        are not declared here, including ones made at run time, whenever the
        service starts (at boot, and on a switch that changes this option).
      '';
    };

    bufferSize = lib.mkOption {
      type = ringSize;
      default = 65536;
      example = 262144;
      description = ''
        Default ring buffer size of a topic, in bytes. It is also the module
        parameter `ring_size`, the size of topics made at run time.
      '';
    };

    testTopic = lib.mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether to also create the `baf-test` topic, for debugging, as the
        original baf always did.
      '';
    };

    enableKernelRust = lib.mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether to turn on Rust (`CONFIG_RUST`) in the kernel of
        {option}`boot.kernelPackages` when that kernel is built without it:
        {file}`fanout.ko` is a Rust-for-Linux module. baf then adds the
        kernel patch `rust` (no patch file, only `features.rust = true`, as
        nixpkgs' own `kernel-rust` test does) to {option}`boot.kernelPatches`.
        A kernel that already has Rust is left as it is.

        This has a cost: the kernel with Rust turned on is not in the binary
        cache, so it is built locally, which takes roughly an hour or more,
        and again on every update of the kernel.

        When `false`, a kernel without Rust stops evaluation with an
        assertion instead.
      '';
    };

    package = lib.mkOption {
      type = types.package;
      default = pkgs.callPackage ./tools.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./tools.nix { }";
      description = "Package providing {command}`baf-setup`, {command}`pubmsg`, {command}`submsg`, {command}`baf-bridge` and {command}`baf-record`.";
    };

    kernelModulePackage = lib.mkOption {
      type = types.package;
      default = config.boot.kernelPackages.callPackage ./fanout.nix { };
      defaultText = lib.literalExpression "config.boot.kernelPackages.callPackage ./fanout.nix { }";
      description = ''
        Package providing {file}`fanout.ko`. It must be built for
        {option}`boot.kernelPackages`, which must be Linux 7.2 or 7.3 (the
        kernels the test suite runs on) with Rust enabled (see
        {option}`baf.services.baf-setup.enableKernelRust`).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # NixOS's own default kernel (pkgs.linuxPackages) is an LTS kernel older
    # than 7.2; use a supported one unless the configuration chooses a kernel.
    boot.kernelPackages = lib.mkIf (supportedKernelPackages != null) (
      lib.mkDefault pkgs.${supportedKernelPackages}
    );
    # Only for a supported kernel: any other is refused below anyway.
    boot.kernelPatches = lib.mkIf addRustPatch [ rustKernelPatch ];

    assertions = [
      {
        assertion = !(config.services.fanout.enable or false);
        message = "baf.services.baf-setup and services.fanout both provide a kernel module named fanout; enable only one.";
      }
      {
        assertion = kernelSupported kernel;
        message =
          "baf: fanout.ko supports Linux 7.2 and 7.3 (the kernels its test suite runs on), "
          + "but boot.kernelPackages is Linux ${kernel.version}. "
          + (
            if supportedKernelPackages != null then
              "Set boot.kernelPackages = pkgs.${supportedKernelPackages}; (or leave boot.kernelPackages unset: with baf enabled it defaults to that)."
            else
              "This nixpkgs has no Linux 7.2 or 7.3 package set: use a newer nixpkgs and set boot.kernelPackages = pkgs.linuxPackages_7_3; (or pkgs.linuxPackages_7_2, or pkgs.linuxPackages_latest while it is 7.2 or 7.3)."
          );
      }
      {
        assertion = !(kernelSupported kernel) || kernelHasRust kernel;
        message =
          "baf: fanout.ko is a Rust-for-Linux module, but the kernel of boot.kernelPackages (Linux ${kernel.version}) is built without CONFIG_RUST"
          + (
            if cfg.enableKernelRust then
              ", even with the kernel patch `rust' (features.rust = true) that baf.services.baf-setup.enableKernelRust adds. nixpkgs turns Rust on only where its rustc is available; a kernel built from its own .config (linuxManualConfig) must set CONFIG_RUST=y itself."
            else
              ". Set baf.services.baf-setup.enableKernelRust = true; to have baf turn Rust on (the kernel is then built locally, not taken from the binary cache), or use a kernel with RUST = yes in its structuredExtraConfig."
          );
      }
    ]
    ++ lib.mapAttrsToList (name: _: {
      assertion = validName name;
      message = "baf topic name `${name}' is invalid: use 1-64 of [A-Za-z0-9._-], optionally in /-separated levels, no `.' or `..' level.";
    }) topics
    ++ lib.mapAttrsToList (name: t: {
      assertion = t.recordMax == null || (t.recordMax >= 4096 && t.recordMax <= t.bufferSize / 4);
      message = "baf topic `${name}': recordMax must be from 4096 to bufferSize/4 (${toString (t.bufferSize / 4)}).";
    }) topics
    ++ lib.mapAttrsToList (name: t: {
      assertion = t.stallTimeoutMs == null || t.lossless;
      message = "baf topic `${name}': stallTimeoutMs needs lossless = true (only lossless readers can hold a writer up).";
    }) topics
    ++ lib.mapAttrsToList (name: t: {
      assertion = t.stallTimeoutMs == null || (t.stallTimeoutMs >= 1 && t.stallTimeoutMs <= 3600000);
      message = "baf topic `${name}': stallTimeoutMs must be from 1 to 3600000 (one hour), or null for the default (10 s).";
    }) topics;

    boot.extraModulePackages = [ cfg.kernelModulePackage ];
    boot.kernelModules = [ "fanout" ];
    # Named topics only: no static /dev/fanoutN devices.
    boot.extraModprobeConfig = ''
      options fanout devices=0 ring_size=${toString cfg.bufferSize}
    '';

    users.groups.baf = { };
    services.udev.packages = [ udevRules ];

    environment.etc."baf/topics".text = ''
      # Generated by NixOS from baf.services.baf-setup.topics; do not edit.
      # NAME [size=BYTES] [record_max=BYTES] [mode=OCTAL] [group=NAME] [owner=USER] [lossless] [stall_timeout=DURATION]
      ${lib.concatStringsSep "\n" (lib.mapAttrsToList topicLine topics)}
    '';

    environment.systemPackages = [ cfg.package ];

    systemd.services.baf-setup = {
      description = "Create the baf topics declared in /etc/baf/topics";
      wantedBy = [ "multi-user.target" ];
      after = [
        "systemd-modules-load.service"
        "systemd-udev-trigger.service"
      ];
      restartTriggers = [ config.environment.etc."baf/topics".source ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = lib.escapeShellArgs (
          [
            (lib.getExe' cfg.package "baf-setup")
            "apply"
            "--file"
            "/etc/baf/topics"
            # The declared set is exact, even when it is empty.
            "--allow-empty"
          ]
          ++ lib.optional (!cfg.testTopic) "--no-test-topic"
        );
        # Root is needed to give topics their owner; nothing else is.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateNetwork = true;
        NoNewPrivileges = true;
      };
    };
  };
}
