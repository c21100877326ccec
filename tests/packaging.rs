//! The .deb an IT person installs: built by `packaging/build-deb` from the test binary, then
//! inspected (files, modes, conffile, maintainer scripts) and its systemd unit checked with
//! `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_installs_the_binary_unit_config_and_scripts() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("sipdesk-deb-{}", std::process::id()));
    let deb = run(Command::new(top.join("packaging/build-deb")).args([
        "--binary",
        env!("CARGO_BIN_EXE_sipdesk"),
        "--out",
        out.to_str().unwrap(),
        "--fast",
    ]));
    let deb = deb.trim();
    let info = run(Command::new("dpkg-deb").args(["--info", deb]));
    assert!(info.contains("Package: sipdesk"), "{info}");
    // ca-certificates: HTTPS to helpdesks verifies against the system's trust store.
    assert!(
        info.contains("Depends: adduser, libc6, ca-certificates"),
        "{info}"
    );
    let contents = run(Command::new("dpkg-deb").args(["--contents", deb]));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/sipdesk"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/sipdesk.service",
        ),
        ("-rw-r----- root/root", "./etc/sipdesk/sipdesk.toml"),
        ("-rw-r--r-- root/root", "./usr/share/doc/sipdesk/README.md"),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/sipdesk/webhook-call.schema.json",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} with {mode}:\n{contents}"
        );
    }
    let root = out.join("root");
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg-deb").args(["-x", deb, root.to_str().unwrap()]));
    run(Command::new("dpkg-deb").args(["-e", deb, root.join("DEBIAN").to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(root.join("DEBIAN/conffiles"))
            .unwrap()
            .trim(),
        "/etc/sipdesk/sipdesk.toml"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").args(["-n", root.join("DEBIAN").join(script).to_str().unwrap()]));
    }
    // The packaged configuration is valid as shipped.
    run(Command::new(env!("CARGO_BIN_EXE_sipdesk")).args([
        "check-config",
        "--config",
        root.join("etc/sipdesk/sipdesk.toml").to_str().unwrap(),
    ]));
    // The unit, with its commands pointed at the extracted files, passes systemd's own checks.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/sipdesk.service")).unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("User=sipdesk")
            && unit.contains("ProtectSystem=strict")
    );
    assert!(
        unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE")
            && unit.contains("NoNewPrivileges=yes")
    );
    let local = unit
        .replace(
            "/usr/bin/sipdesk",
            root.join("usr/bin/sipdesk").to_str().unwrap(),
        )
        .replace("/bin/kill", "/usr/bin/kill");
    let unit_path = out.join("sipdesk.service");
    std::fs::write(&unit_path, local).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", unit_path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| {
            l.contains("Unknown")
                || l.contains("Failed to parse")
                || l.contains("Invalid")
                || l.contains("not executable")
        })
        .collect();
    assert!(problems.is_empty(), "{said}");
    let _ = std::fs::remove_dir_all(&out);
}
