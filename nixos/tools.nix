# The baf command-line tools: pubmsg, submsg, baf-setup.
#
#   pkgs.callPackage ./tools.nix { }
{ lib, rustPlatform }:

let
  fs = lib.fileset;
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "baf-tools";
  inherit (cargoToml.workspace.package) version;

  # The Cargo workspace only. libbaf compiles the kernel's abi.rs and
  # ring.rs, so the kernel's Rust files are part of it; nothing else in
  # kernel/ is. Every workspace member must be listed here
  # (scripts/nix-check.sh checks that).
  src = fs.toSource {
    root = ../.;
    fileset = fs.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../libbaf
      ../pubmsg
      ../submsg
      ../baf-setup
      ../tests/Cargo.toml
      ../tests/src
      (fs.fileFilter (file: file.hasExt "rs") ../kernel)
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package=pubmsg"
    "--package=submsg"
    "--package=baf-setup"
  ];
  # Host tests only (libbaf's ring property tests among them); the device
  # tests need the module and run in the VM test instead.
  cargoTestFlags = [
    "--package=baf"
    "--package=pubmsg"
    "--package=submsg"
    "--package=baf-setup"
  ];

  meta = {
    description = "Tools of baf, publish/subscribe built into the Linux kernel: pubmsg, submsg, baf-setup";
    license = lib.licenses.gpl2Only;
    platforms = lib.platforms.linux;
    mainProgram = "baf-setup";
  };
}
