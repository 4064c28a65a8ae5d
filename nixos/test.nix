# NixOS VM test of the baf module: boots linuxPackages_latest with fanout.ko,
# declares two topics, and checks permissions and one-to-many delivery.
#
#   nix build .#checks.x86_64-linux.vm-test
{ pkgs }:

pkgs.testers.runNixOSTest {
  name = "baf";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ ./module.nix ];

      boot.kernelPackages = pkgs.linuxPackages_latest;

      baf.services.baf-setup = {
        enable = true;
        topics = [
          "topic1"
          "topic2"
        ];
      };

      users.users.alice = {
        isNormalUser = true;
        extraGroups = [ "baf" ];
      };
      users.users.mallory.isNormalUser = true;
    };

  testScript = ''
    bin = "/run/current-system/sw/bin"

    machine.wait_for_unit("baf-setup.service")

    with subtest("fanout.ko is loaded and the control device belongs to group baf"):
        machine.succeed("grep -q '^fanout ' /proc/modules")
        machine.succeed("test -c /dev/baf-control")
        out = machine.succeed("stat -c '%a %G' /dev/baf-control").strip()
        assert out == "660 baf", f"/dev/baf-control is {out!r}, want '660 baf'"
        # devices=0: no static /dev/fanoutN topics
        machine.fail("test -e /dev/fanout0")

    with subtest("declared topics exist with mode 0660 and group baf"):
        machine.succeed("grep -q '^topic1 ' /etc/baf/topics")
        for t in ["topic1", "topic2", "baf-test"]:
            machine.succeed(f"test -c /dev/baf/{t}")
        out = machine.succeed("stat -c '%a %G' /dev/baf/topic1").strip()
        assert out == "660 baf", f"/dev/baf/topic1 is {out!r}, want '660 baf'"

    with subtest("one publisher reaches two subscribers"):
        for r in ["a", "b"]:
            machine.succeed(
                f"systemd-run --unit=sub-{r} --uid=alice"
                f" -p StandardOutput=file:/tmp/sub-{r}.out {bin}/submsg topic1"
            )
        # A reader sees only what is written after it opened the topic.
        for r in ["a", "b"]:
            machine.wait_until_succeeds(
                f"ls -l /proc/$(systemctl show -p MainPID --value sub-{r})/fd"
                " | grep -q /dev/baf/topic1"
            )
        machine.succeed(f"su alice -c 'echo hi | {bin}/pubmsg topic1'")
        for r in ["a", "b"]:
            machine.wait_until_succeeds(f"grep -qx hi /tmp/sub-{r}.out")

    with subtest("a user outside group baf is refused"):
        machine.fail("su mallory -c 'echo x > /dev/baf/topic1'")
        machine.fail("su mallory -c 'exec 3< /dev/baf/topic1'")
        machine.fail("su mallory -c 'exec 3<> /dev/baf-control'")
        machine.succeed("su alice -c 'echo y > /dev/baf/topic1'")

    with subtest("baf-setup status lists every topic"):
        status = machine.succeed("baf-setup status")
        for t in ["topic1", "topic2", "baf-test"]:
            assert t in status, f"{t} missing from baf-setup status:\n{status}"

    with subtest("applying again is idempotent"):
        machine.succeed("systemctl restart baf-setup.service")
        for t in ["topic1", "topic2", "baf-test"]:
            machine.succeed(f"test -c /dev/baf/{t}")
  '';
}
