# The sandbox every long-running baf service shares (baf-bridge-<name>,
# baf-recorder-<name>): a dynamic user in group baf, no capabilities, the
# file system read-only, no device but the ones the unit allows (DeviceAllow
# is the unit's own: read-only for a recorder, read-write for a bridge),
# and the system calls of an ordinary service. Each unit adds what it needs
# on top: its devices, network families, directories, umask.
{
  DynamicUser = true;
  SupplementaryGroups = [ "baf" ];
  DevicePolicy = "closed";
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [
    "@system-service"
    "~@privileged"
  ];
}
