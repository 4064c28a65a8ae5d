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
    in
    {
      packages = forAllSystems (
        system: pkgs: {
          baf-tools = pkgs.callPackage ./nixos/tools.nix { };
          fanout = pkgs.linuxPackages_latest.callPackage ./nixos/fanout.nix { };
          default = self.packages.${system}.baf-tools;
        }
      );

      # Adds baf-tools, and baf-fanout to every kernel package set
      # (pkgs.linuxPackages.baf-fanout, pkgs.linuxPackages_latest.baf-fanout, ...).
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
          inherit (pkgs.linuxPackages_latest) kernel;
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
