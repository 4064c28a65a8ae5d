# baf-record services: each entry of baf.services.recorders runs one
# `baf-record record` (baf topics to MCAP files: whole, split and rotated,
# or a dashcam window written on a trigger) as the systemd service
# baf-recorder-<name>, hardened, as a dynamic user in group baf.
# Imported by module.nix; active only with baf.services.baf-setup.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  setup = config.baf.services.baf-setup;
  cfg = config.baf.services.recorders;
  inherit (lib) types;

  recorderOptions =
    { name, ... }:
    {
      options = {
        enable = lib.mkOption {
          type = types.bool;
          default = true;
          description = "Whether to run this recorder (as the service baf-recorder-${name}).";
        };
        topics = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "sensors/#"
            "robot/+/state"
          ];
          description = ''
            Topics to record: baf patterns (`+` one level, `#` the rest,
            `#` alone every topic), now and as they are created. Must not
            be empty: nothing is recorded by default.
          '';
        };
        exclude = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "sensors/debug" ];
          description = "Topics not to record, as baf patterns.";
        };
        directory = lib.mkOption {
          type = types.str;
          default = "/var/lib/baf-record/${name}";
          defaultText = lib.literalExpression ''"/var/lib/baf-record/<name>"'';
          description = ''
            Where the recordings go (files named `<prefix>-<UTC time>-<n>.mcap`).
            Under /var/lib/baf-record it is the service's state directory,
            made by systemd; elsewhere it must exist and be writable by
            group baf.
          '';
        };
        prefix = lib.mkOption {
          type = types.str;
          default = name;
          defaultText = lib.literalExpression "<name>";
          description = "Start of the recordings' file names.";
        };
        lossless = lib.mkOption {
          type = types.bool;
          default = false;
          description = ''
            Whether to read losslessly the topics that allow it (created
            with `lossless = true`): their writers then wait for the
            recorder (at most the topic's stall timeout). Off: the recorder
            is an ordinary reader that never slows a writer, and what it
            loses is written into the recording.
          '';
        };
        splitSize = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "100M";
          description = "Start a new file once one is this large (`64K`, `100M`, `1G`).";
        };
        splitTime = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "1h";
          description = "Start a new file after this long (`30s`, `10m`, `1h`).";
        };
        maxFiles = lib.mkOption {
          type = types.nullOr types.ints.positive;
          default = null;
          example = 24;
          description = "Keep at most this many files: the oldest is removed. Null: keep them all.";
        };
        compression = lib.mkOption {
          type = types.enum [
            "none"
            "zstd"
            "lz4"
          ];
          default = "none";
          description = "Chunk compression of the files (see docs/record.md for what each costs).";
        };
        dashcam = {
          enable = lib.mkOption {
            type = types.bool;
            default = false;
            description = ''
              Whether to keep only a window in memory and write it on a
              trigger: `systemctl reload baf-recorder-${name}` (SIGUSR1)
              or a record on one of {option}`dashcam.triggers`.
            '';
          };
          before = lib.mkOption {
            type = types.str;
            default = "30s";
            description = "How much is kept in memory before a trigger.";
          };
          after = lib.mkOption {
            type = types.str;
            default = "10s";
            description = "How long after the last trigger is written too.";
          };
          triggers = lib.mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "alarms" ];
            description = "Topics (patterns) any record of which is a trigger.";
          };
          maxMemory = lib.mkOption {
            type = types.str;
            default = "64M";
            description = "Most memory the window may hold (the oldest records go first).";
          };
        };
        extraArgs = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "More command-line arguments of {command}`baf-record record`.";
        };
      };
    };

  enabled = lib.filterAttrs (_: r: r.enable) cfg;

  stateDir = "/var/lib/baf-record/";
  inState = r: lib.hasPrefix stateDir r.directory;

  args =
    r:
    r.topics
    ++ lib.concatMap (e: [
      "-e"
      e
    ]) r.exclude
    ++ [
      "-o"
      "${r.directory}/"
      "--prefix"
      r.prefix
      "--compression"
      r.compression
    ]
    ++ lib.optional r.lossless "--lossless"
    ++ lib.optionals (r.splitSize != null) [
      "--split-size"
      r.splitSize
    ]
    ++ lib.optionals (r.splitTime != null) [
      "--split-time"
      r.splitTime
    ]
    ++ lib.optionals (r.maxFiles != null) [
      "--max-files"
      (toString r.maxFiles)
    ]
    ++ lib.optionals r.dashcam.enable (
      [
        "--before"
        r.dashcam.before
        "--after"
        r.dashcam.after
        "--max-memory"
        r.dashcam.maxMemory
      ]
      ++ lib.concatMap (t: [
        "--trigger"
        t
      ]) r.dashcam.triggers
    )
    ++ r.extraArgs;

  service = name: r: {
    description = "baf-record ${name}: baf topics to MCAP files";
    wantedBy = [ "multi-user.target" ];
    # The module is loaded and the declared topics exist first.
    after = [ "baf-setup.service" ];
    wants = [ "baf-setup.service" ];
    serviceConfig = import ./hardening.nix // {
      ExecStart = lib.escapeShellArgs (
        [
          (lib.getExe' setup.package "baf-record")
          "record"
        ]
        ++ args r
      );
      # A dashcam's trigger: systemctl reload (without a dashcam, a new file).
      ExecReload = "${pkgs.coreutils}/bin/kill -USR1 $MAINPID";
      # SIGTERM finishes and indexes the current file (exit 0).
      Restart = "on-failure";
      RestartSec = 2;

      # Group baf (nixos/hardening.nix) reads topics (and, where allowed,
      # losslessly); no network.
      DeviceAllow = [ "char-baf r" ];
      PrivateNetwork = true;
      RestrictAddressFamilies = [ "AF_UNIX" ];
      UMask = "0027";
    }
    # Its directory: the state directory systemd makes for it, or one
    # given elsewhere, the only place it may write.
    // (
      if inState r then
        {
          StateDirectory = lib.removePrefix "/var/lib/" r.directory;
          StateDirectoryMode = "0750";
        }
      else
        { ReadWritePaths = [ r.directory ]; }
    );
  };
in
{
  options.baf.services.recorders = lib.mkOption {
    type = types.attrsOf (types.submodule recorderOptions);
    default = { };
    example = lib.literalExpression ''
      {
        robot = {
          topics = [ "robot/#" ];
          splitTime = "1h";
          maxFiles = 48;
        };
        crashes = {
          topics = [ "cam/#" "robot/#" ];
          dashcam = { enable = true; before = "30s"; after = "10s"; triggers = [ "alarms" ]; };
          maxFiles = 20;
        };
      }
    '';
    description = ''
      Recorders of baf topics to MCAP files, each run as the service
      `baf-recorder-<name>` ({command}`baf-record record`): a dynamic user
      in group `baf` that may read the baf devices and write its
      directory only, with no network. Needs
      {option}`baf.services.baf-setup.enable`.
    '';
  };

  config = lib.mkIf (enabled != { }) {
    assertions = [
      {
        assertion = setup.enable;
        message = "baf.services.recorders needs baf.services.baf-setup.enable = true (the fanout module, group baf and the tools).";
      }
    ]
    ++ lib.concatLists (
      lib.mapAttrsToList (name: r: [
        {
          assertion = r.topics != [ ];
          message = "baf recorder `${name}': give topics to record (topics); \"#\" records every topic.";
        }
        {
          assertion = !(r.dashcam.enable && (r.splitSize != null || r.splitTime != null));
          message = "baf recorder `${name}': splitSize and splitTime do not apply to a dashcam (each trigger makes one file).";
        }
        {
          assertion = r.dashcam.triggers == [ ] || r.dashcam.enable;
          message = "baf recorder `${name}': dashcam.triggers needs dashcam.enable = true.";
        }
        {
          assertion = lib.hasPrefix "/" r.directory && !lib.hasPrefix "/nix/store/" r.directory;
          message = "baf recorder `${name}': directory must be an absolute path outside the Nix store.";
        }
      ]) enabled
    );

    systemd.services = lib.mapAttrs' (
      name: r: lib.nameValuePair "baf-recorder-${name}" (service name r)
    ) enabled;
  };
}
