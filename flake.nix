{
  description = "baf: publish/subscribe built into the Linux kernel (fanout.ko and its tools)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      forAllSystems =
        f:
        lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: f system nixpkgs.legacyPackages.${system});
      # fanout.ko supports Linux 7.2 and 7.3, the kernels the test suite runs
      # on. The kernel package set to build it for: the first of these that
      # is 7.2 or 7.3 (nixos/module.nix picks its default the same way);
      # linuxPackages_latest otherwise, where fanout is marked broken.
      # fanout.ko is a Rust-for-Linux module: if that set's kernel has no
      # Rust, Rust is turned on the way the NixOS module's enableKernelRust
      # does it (the kernel patch `rust`, features.rust = true). That kernel
      # is then built locally, not taken from the binary cache.
      kernelPackagesFor =
        pkgs:
        let
          supported =
            name:
            let
              r = builtins.tryEval (
                pkgs ? ${name}
                && lib.versionAtLeast pkgs.${name}.kernel.version "7.2"
                && lib.versionOlder pkgs.${name}.kernel.version "7.4"
              );
            in
            r.success && r.value;
          chosen = lib.findFirst supported null [
            "linuxPackages_7_3"
            "linuxPackages_7_2"
            "linuxPackages_latest"
          ];
          kernelPackages = pkgs.${chosen};
          inherit (kernelPackages) kernel;
        in
        if chosen == null then
          pkgs.linuxPackages_latest
        else if kernel.withRust or (kernel.config.isYes "RUST") then
          kernelPackages
        else
          kernelPackages.extend (
            _: super: {
              kernel = super.kernel.override (old: {
                kernelPatches = (old.kernelPatches or [ ]) ++ [
                  {
                    name = "rust";
                    patch = null;
                    features.rust = true;
                  }
                ];
              });
            }
          );
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          baf-tools = pkgs.callPackage ./nixos/tools.nix { };
          fanout = (kernelPackagesFor pkgs).callPackage ./nixos/fanout.nix { };
          default = self.packages.${system}.baf-tools;
        }
      );

      # Adds baf-tools, and baf-fanout to every kernel package set
      # (pkgs.linuxPackages_7_3.baf-fanout, pkgs.linuxPackages_latest.baf-fanout, ...);
      # it builds only in the sets whose kernel is 7.2 or 7.3.
      overlays.default = final: prev: {
        baf-tools = final.callPackage ./nixos/tools.nix { };
        kernelPackagesExtensions = prev.kernelPackagesExtensions ++ [
          (kfinal: _: { baf-fanout = kfinal.callPackage ./nixos/fanout.nix { }; })
        ];
      };

      nixosModules.default = import ./nixos/module.nix;

      checks = forAllSystems (
        system: pkgs:
        {
          inherit (self.packages.${system}) baf-tools fanout;
          module = import ./nixos/module-check.nix { inherit pkgs; };
        }
        // lib.optionalAttrs (system == "x86_64-linux") {
          vm-test = import ./nixos/test.nix { inherit pkgs; };
        }
      );

      devShells = forAllSystems (
        system: pkgs:
        let
          inherit (kernelPackagesFor pkgs) kernel;
        in
        {
          default = pkgs.mkShell {
            packages = with pkgs; [
              rustc
              cargo
              clippy
              rustfmt
              qemu
            ];
            # The kernel's module build tools (with its rustc and bindgen).
            nativeBuildInputs = kernel.moduleBuildDependencies;
            # kernel/Makefile reads KDIR: `make -C kernel` builds fanout.ko.
            KDIR = "${kernel.dev}/lib/modules/${kernel.modDirVersion}/build";
          };
        }
      );
    };
}
