# baf-bridge services: each entry of baf.services.bridges runs one
# `baf-bridge` (baf topics to and from other hosts over Zenoh) as the
# systemd service baf-bridge-<name>, hardened, as a dynamic user in group
# baf. Imported by module.nix; active only with baf.services.baf-setup.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  setup = config.baf.services.baf-setup;
  cfg = config.baf.services.bridges;
  inherit (lib) types;

  bridgeOptions =
    { name, ... }:
    {
      options = {
        enable = lib.mkOption {
          type = types.bool;
          default = true;
          description = "Whether to run this bridge (as the service baf-bridge-${name}).";
        };
        export = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "sensors/#"
            "robot/+/state"
          ];
          description = ''
            Topics to publish to Zenoh: baf patterns (`+` one level, `#`
            the rest, `#` alone every topic), now and as they are created.
            Topic `T` is published under the key `<keyPrefix>/T`. Empty
            (the default): nothing is exported.
          '';
        };
        exclude = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "remote/#" ];
          description = "Topics not to export, as baf patterns.";
        };
        import = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "baf/**" ];
          description = ''
            Zenoh key expressions (`*` one level, `**` any number) whose
            samples are written into local topics: the key less
            `<keyPrefix>/`, under {option}`into`.
          '';
        };
        into = lib.mkOption {
          type = types.str;
          default = "";
          example = "robot-2/";
          description = ''
            Local prefix of imported topics, so that a topic's name says
            where it came from (`baf/sensors` becomes `robot-2/sensors`).
            Empty: the same names as on the exporting host.
          '';
        };
        keyPrefix = lib.mkOption {
          type = types.str;
          default = "baf";
          description = "Zenoh key prefix of exported topics, taken off imported keys.";
        };
        mode = lib.mkOption {
          type = types.enum [
            "peer"
            "client"
          ];
          default = "peer";
          description = "Zenoh mode: `peer` (direct, and through routers) or `client` (through one router).";
        };
        connect = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "tcp/192.168.1.2:7447" ];
          description = "Zenoh endpoints to connect to (`tcp/HOST:PORT`, `unixsock-stream/PATH`); retried until they answer.";
        };
        listen = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "tcp/0.0.0.0:7447" ];
          description = "Zenoh endpoints to listen on. Empty: none (the bridge only connects).";
        };
        multicastScouting = lib.mkOption {
          type = types.bool;
          default = false;
          description = ''
            Whether to find Zenoh peers on the local network by UDP
            multicast (and be found by them). Off: the peers are the
            {option}`connect` endpoints and those that connect to
            {option}`listen`.
          '';
        };
        gossip = lib.mkOption {
          type = types.bool;
          default = false;
          description = "Whether to connect to the peers that connected peers tell of (Zenoh's gossip scouting).";
        };
        auth = {
          user = lib.mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "robot-1";
            description = ''
              User name this bridge authenticates as to the bridges (and
              Zenoh routers) it connects to, with the password in
              {option}`auth.passwordFile` (Zenoh user/password
              authentication: the password itself never crosses the
              network, but the records are not encrypted).
            '';
          };
          passwordFile = lib.mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/etc/baf/bridge/robot-1.password";
            description = ''
              File holding the password of {option}`auth.user` (one line),
              outside the Nix store (which everyone can read). Given to the
              service with systemd's `LoadCredential=`, so it may belong to
              root with mode 0600.
            '';
          };
          usersFile = lib.mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/etc/baf/bridge/users";
            description = ''
              File of `USER:PASSWORD` lines: only these users may connect
              to this bridge's {option}`listen` endpoints. Outside the Nix
              store; given to the service with `LoadCredential=`. Null:
              anyone who reaches the endpoints may connect (a warning says
              so when the firewall is opened for them).
            '';
          };
        };
        openFirewall = lib.mkOption {
          type = types.bool;
          default = false;
          description = "Whether to open the TCP ports of the {option}`listen` endpoints (and UDP 7446 for multicast scouting) in the firewall.";
        };
        envelope = lib.mkOption {
          type = types.enum [
            "none"
            "json"
          ];
          default = "none";
          description = "What an imported record holds: its payload (`none`), or a JSON object with its provenance and payload (`json`).";
        };
        congestion = lib.mkOption {
          type = types.enum [
            "auto"
            "drop"
            "block"
          ];
          default = "auto";
          description = ''
            Zenoh congestion control of exported records: `auto` blocks for
            topics read losslessly (created with `lossless = true`) and drops
            for the others.
          '';
        };
        create = lib.mkOption {
          type = types.bool;
          default = true;
          description = "Whether to create missing topics for imported keys (with the module's default settings).";
        };
        hostName = lib.mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = lib.literalExpression "config.networking.hostName";
          description = "Host name sent with exported records; `null`: {option}`networking.hostName`.";
        };
        zenohConfig = lib.mkOption {
          type = types.attrsOf types.anything;
          default = { };
          example = lib.literalExpression ''
            {
              transport.link.tx.lease = 5000;
              scouting.multicast.interface = "eth0";
            }
          '';
          description = ''
            Extra Zenoh configuration (the structure of Zenoh's JSON5
            configuration file), applied before the options above.
          '';
        };
        logLevel = lib.mkOption {
          type = types.str;
          default = "info";
          example = "info,zenoh=debug";
          description = "Log level (`error`, `warn`, `info`, `debug`) or a filter.";
        };
        extraArgs = lib.mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "More command-line arguments of {command}`baf-bridge`.";
        };
      };
    };

  enabled = lib.filterAttrs (_: b: b.enable) cfg;

  # The bridge's own configuration file (JSON, the same structure as TOML).
  configFile =
    name: b:
    pkgs.writeText "baf-bridge-${name}.json" (
      builtins.toJSON {
        inherit (b)
          export
          exclude
          import
          into
          envelope
          congestion
          create
          ;
        key_prefix = b.keyPrefix;
        host_name = if b.hostName != null then b.hostName else config.networking.hostName;
        log_level = b.logLevel;
        zenoh = {
          inherit (b) mode connect listen gossip;
          multicast_scouting = b.multicastScouting;
          # Relative names: the service's credentials (LoadCredential=).
          auth =
            lib.optionalAttrs (b.auth.user != null) { inherit (b.auth) user; }
            // lib.optionalAttrs (b.auth.passwordFile != null) { password_file = "password"; }
            // lib.optionalAttrs (b.auth.usersFile != null) { users_file = "users"; };
        }
        // lib.optionalAttrs (b.zenohConfig != { }) {
          config = pkgs.writeText "baf-bridge-${name}-zenoh.json5" (builtins.toJSON b.zenohConfig);
        };
      }
    );

  # TCP ports of "tcp/HOST:PORT" endpoints.
  tcpPorts =
    endpoints:
    lib.concatMap (
      e:
      let
        m = builtins.match "tcp/.*:([0-9]+)([?#].*)?" e;
      in
      lib.optional (m != null) (lib.toInt (builtins.head m))
    ) endpoints;

  service = name: b: {
    description = "baf-bridge ${name}: baf topics to and from other hosts over Zenoh";
    wantedBy = [ "multi-user.target" ];
    # The module is loaded and the declared topics exist first.
    after = [
      "baf-setup.service"
      "network-online.target"
    ];
    wants = [
      "baf-setup.service"
      "network-online.target"
    ];
    serviceConfig = import ./hardening.nix // {
      ExecStart = lib.escapeShellArgs (
        [
          (lib.getExe' setup.package "baf-bridge")
          "--config"
          "${configFile name b}"
        ]
        ++ b.extraArgs
      );
      # The password and users files, readable by the dynamic user as
      # $CREDENTIALS_DIRECTORY/password and /users (the bridge looks
      # relative names up there).
      LoadCredential =
        lib.optional (b.auth.passwordFile != null) "password:${b.auth.passwordFile}"
        ++ lib.optional (b.auth.usersFile != null) "users:${b.auth.usersFile}";
      # SIGTERM stops it cleanly (exit 0); anything else is retried, as
      # peers come and go.
      Restart = "on-failure";
      RestartSec = 2;

      # Group baf (nixos/hardening.nix) reads and writes topics and may
      # create them (/dev/baf-control).
      DeviceAllow = [ "char-baf rw" ];
      RuntimeDirectory = "baf-bridge-${name}"; # for unixsock-stream endpoints
      # IP for Zenoh, Unix sockets, netlink to list the network interfaces.
      RestrictAddressFamilies = [
        "AF_INET"
        "AF_INET6"
        "AF_UNIX"
        "AF_NETLINK"
      ];
      UMask = "0077";
    };
  };
in
{
  options.baf.services.bridges = lib.mkOption {
    type = types.attrsOf (types.submodule bridgeOptions);
    default = { };
    example = lib.literalExpression ''
      {
        lab = {
          export = [ "sensors/#" ];
          import = [ "baf/**" ];
          into = "lab/";
          listen = [ "tcp/0.0.0.0:7447" ];
          connect = [ "tcp/robot-2:7447" ];
          openFirewall = true;
        };
      }
    '';
    description = ''
      Bridges of baf topics to and from other hosts over Zenoh, each run
      as the service `baf-bridge-<name>` ({command}`baf-bridge`): a
      dynamic user in group `baf` with access to the baf devices only, in
      a read-only file system. Needs {option}`baf.services.baf-setup.enable`.
    '';
  };

  config = lib.mkIf (enabled != { }) {
    assertions = [
      {
        assertion = setup.enable;
        message = "baf.services.bridges needs baf.services.baf-setup.enable = true (the fanout module, group baf and the tools).";
      }
    ]
    ++ lib.concatLists (
      lib.mapAttrsToList (name: b: [
        {
          assertion = b.export != [ ] || b.import != [ ];
          message = "baf bridge `${name}': give topics to export or keys to import (export, import); nothing is exported by default.";
        }
        {
          assertion =
            b.listen != [ ] || b.connect != [ ] || b.multicastScouting || b.zenohConfig ? listen || b.zenohConfig ? connect;
          message = "baf bridge `${name}': give Zenoh endpoints to listen on or connect to (listen, connect), or turn on multicastScouting.";
        }
        {
          assertion = (b.auth.user == null) == (b.auth.passwordFile == null);
          message = "baf bridge `${name}': auth.user and auth.passwordFile go together.";
        }
        {
          assertion = lib.all (f: f == null || !lib.hasPrefix "/nix/store/" f) [
            b.auth.passwordFile
            b.auth.usersFile
          ];
          message = "baf bridge `${name}': auth.passwordFile and auth.usersFile must not be in the Nix store (everyone can read it).";
        }
      ]) enabled
    );

    warnings = lib.concatLists (
      lib.mapAttrsToList (
        name: b:
        lib.optional (b.openFirewall && b.listen != [ ] && b.auth.usersFile == null)
          "baf bridge `${name}': its listen endpoints are open in the firewall without auth.usersFile: any host that reaches them may connect, receive what it exports and send what it imports."
      ) enabled
    );

    systemd.services = lib.mapAttrs' (
      name: b: lib.nameValuePair "baf-bridge-${name}" (service name b)
    ) enabled;

    networking.firewall.allowedTCPPorts = lib.concatLists (
      lib.mapAttrsToList (_: b: lib.optionals b.openFirewall (tcpPorts b.listen)) enabled
    );
    networking.firewall.allowedUDPPorts = lib.optional (lib.any (b: b.openFirewall && b.multicastScouting) (
      lib.attrValues enabled
    )) 7446;
  };
}
