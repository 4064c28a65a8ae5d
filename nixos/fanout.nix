# fanout.ko, the baf kernel module, for one kernel package set.
#
#   pkgs.linuxPackages_latest.callPackage ./fanout.nix { }
#
# Follows nixpkgs' rust-out-of-tree-module recipe: Kbuild does the work,
# the kernel's dev tree (with its Rust sysroot) is KDIR.
{
  lib,
  kernel,
  kernelModuleMakeFlags,
}:

let
  fs = lib.fileset;
  # Only what Kbuild reads: a change to docs or the VM configs does not rebuild the module.
  src = fs.toSource {
    root = ../kernel;
    fileset = fs.unions [
      ../kernel/Kbuild
      ../kernel/Makefile
      (fs.fileFilter (file: file.hasExt "rs") ../kernel)
    ];
  };
  withRust = kernel.withRust or (kernel.config.isYes "RUST");
in
kernel.stdenv.mkDerivation {
  pname = "baf-fanout";
  version = "${(lib.importTOML ../Cargo.toml).workspace.package.version}-${kernel.version}";
  inherit src;

  nativeBuildInputs = kernel.moduleBuildDependencies;
  makeFlags = kernelModuleMakeFlags ++ [
    "KDIR=${kernel.dev}/lib/modules/${kernel.modDirVersion}/build"
  ];
  enableParallelBuilding = true;

  installFlags = [ "INSTALL_MOD_PATH=${placeholder "out"}" ];
  installTargets = [ "modules_install" ];

  meta = {
    description = "Kernel side of baf: named publish/subscribe topics as character devices";
    license = lib.licenses.gpl2Only;
    platforms = [
      "x86_64-linux"
      "aarch64-linux"
    ];
    # Supported: Linux 7.2 and 7.3, the kernels the test suite runs on (the
    # kernel's Rust API changes every release; kernel/compat.rs covers these
    # two). A Rust-for-Linux module, so the kernel also needs CONFIG_RUST
    # (a kernel given features.rust by the kernel patch `rust` has it:
    # withRust is then true). The NixOS module (module.nix) turns Rust on
    # (enableKernelRust) and asserts the rest with a message naming the fix;
    # this keeps a direct build from failing deep in the compiler.
    broken =
      lib.versionOlder kernel.version "7.2" || lib.versionAtLeast kernel.version "7.4" || !withRust;
  };
}
