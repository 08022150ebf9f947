import Foundation
import Logging
import SyncDaemon
import XCTest

/// syncd as a system service (Docs/Operations.md): JSON logs, systemd's notification protocol,
/// owners and modes of replicated files, and the control socket opened to a group.
final class ServiceIntegrationTests: XCTestCase, ClusterTesting {

    private func json(_ line: Substring) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    // MARK: JSON logs

    func test_jsonLogHandler_writesOneObjectPerLine_withMillisecondUTCTimes_levelLabelMessageMetadata() throws {
        final class Lines: @unchecked Sendable { var all: [String] = [] }
        let lines = Lines()
        let at = Date(timeIntervalSince1970: 1_764_570_887.123_9)   // 2025-12-01T06:34:47.123Z
        var logger = Logger(label: "syncd.test") { label in
            var h = JSONLogHandler(label: label, now: { at }, write: { lines.all.append($0) })
            h.logLevel = .debug
            return h
        }
        logger[metadataKey: "folder"] = "/srv/a \"b\""
        let extra: Logger.Metadata = [
            "peer": Logger.MetadataValue.string("ab12"),
            "n": Logger.MetadataValue.stringConvertible(3),
            "list": Logger.MetadataValue.array([.string("x"), .string("y")]),
        ]
        logger.notice("applied 3 changes\nfrom \"peer\"\t\u{1}é", metadata: extra)
        logger.trace("below the level: not written")
        XCTAssertEqual(lines.all.count, 1)
        let line = try XCTUnwrap(lines.all.first)
        XCTAssertTrue(line.hasSuffix("}\n"), line)
        XCTAssertFalse(line.dropLast().contains("\n"), "one line: \(line)")
        let object = try XCTUnwrap(json(Substring(line)), line)
        XCTAssertEqual(object["time"] as? String, "2025-12-01T06:34:47.123Z")
        XCTAssertEqual(object["level"] as? String, "notice")
        XCTAssertEqual(object["label"] as? String, "syncd.test")
        XCTAssertEqual(object["message"] as? String, "applied 3 changes\nfrom \"peer\"\t\u{1}é")
        let metadata = try XCTUnwrap(object["metadata"] as? [String: Any])
        XCTAssertEqual(metadata["folder"] as? String, "/srv/a \"b\"")
        XCTAssertEqual(metadata["peer"] as? String, "ab12")
        XCTAssertEqual(metadata["n"] as? String, "3")
        XCTAssertEqual(metadata["list"] as? [String], ["x", "y"])
        XCTAssertTrue(line.hasPrefix("{\"time\":"), "time first, for people reading the raw lines: \(line)")
        XCTAssertEqual(JSONLogHandler.timestamp(Date(timeIntervalSince1970: -0.5)), "1969-12-31T23:59:59.500Z")
    }

    // MARK: systemd

    func test_serviceNotifier_readsNotifySocketAndWatchdog() {
        XCTAssertNil(ServiceNotifier(environment: [:]))
        let plain = ServiceNotifier(environment: ["NOTIFY_SOCKET": "/run/systemd/notify"])
        XCTAssertEqual(plain?.socketPath, "/run/systemd/notify")
        XCTAssertNil(plain?.watchdogInterval)
        let fed = ServiceNotifier(environment: ["NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "20000000"], pid: 42)
        XCTAssertEqual(fed?.watchdogInterval, .seconds(10), "half of WatchdogSec")
        XCTAssertNil(ServiceNotifier(environment: ["NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "41"], pid: 42)?
            .watchdogInterval, "the watchdog is another process's")
        XCTAssertTrue(ServiceNotifier.reloading(now: timespec(tv_sec: 5, tv_nsec: 250_000)).hasPrefix("RELOADING=1\nMONOTONIC_USEC=5000250"))
    }

    /// A unix datagram socket in place of systemd's: what `Type=notify` with `WatchdogSec=` sees.
    func test_underSystemd_theDaemonSaysReady_feedsTheWatchdog_saysReloadingAndStopping_andLogsJSON() throws {
        let h = try DaemonHarness(name: "notify")
        let socketPath = h.root + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0, String(cString: strerror(errno)))
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [String] = []
        func receive(until condition: ([String]) -> Bool, within seconds: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !condition(received) && Date() < deadline {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 { received.append(String(decoding: buffer[..<n], as: UTF8.self)) }
            }
            return condition(received)
        }

        try h.startDaemon(extra: ["--log-format", "json"], environment: ["NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "400000"])
        let pid = try XCTUnwrap(h.process?.processIdentifier)
        XCTAssertTrue(receive(until: { $0.contains { $0.hasPrefix("READY=1") } }, within: 10), "\(received)")
        let ready = received.first { $0.hasPrefix("READY=1") } ?? ""
        XCTAssertTrue(ready.contains("MAINPID=\(pid)"), ready)
        XCTAssertTrue(receive(until: { $0.filter { $0 == "WATCHDOG=1" }.count >= 3 }, within: 3),
                      "WATCHDOG=1 every 0.2 s (half of WATCHDOG_USEC): \(received)")

        received = []
        kill(pid, SIGHUP)
        XCTAssertTrue(receive(until: { $0.contains { $0.hasPrefix("READY=1") } }, within: 10), "\(received)")
        let reloading: Int = received.firstIndex { $0.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") } ?? Int.max
        let readyAgain: Int = received.firstIndex { $0.hasPrefix("READY=1") } ?? -1
        XCTAssertLessThan(reloading, readyAgain, "RELOADING=1 comes before READY=1: \(received)")

        received = []
        kill(pid, SIGTERM)
        XCTAssertTrue(receive(until: { $0.contains("STOPPING=1") }, within: 10), "\(received)")
        h.process?.waitUntilExit()
        XCTAssertEqual(h.process?.terminationStatus, 0)
        h.process = nil

        // --log-format json: every line of the daemon's log is one object.
        let lines = h.daemonLog.split(separator: "\n")
        XCTAssertGreaterThan(lines.count, 3)
        for line in lines {
            let object = try XCTUnwrap(json(line), "not a JSON object: \(line)")
            XCTAssertNotNil((object["time"] as? String)?.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/), "\(line)")
            XCTAssertNotNil(object["level"] as? String)
            XCTAssertEqual(object["label"] as? String, "syncd")
        }
        XCTAssertTrue(lines.contains { json($0)?["message"] as? String == "stopped" }, h.daemonLog)
    }

    // MARK: applications as their own users

    /// A folder declared with `owner`, `group`, `file_mode`, `dir_mode`: what arrives from a peer is
    /// theirs and moded so (the writer's files are root's 0644 and 0755); the daemon's control
    /// socket, with `control_group`, lets that group's members run `syncd wait` — and nobody else.
    func test_declaredOwnerAndModes_applyToReplicatedFiles_andTheControlGroupRunsWait() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root: chown to another user, setpriv") }
        let app: (uid: uid_t, gid: gid_t) = DaemonHarness.serviceUser    // nobody:nogroup, the "application"
        let a = try DaemonHarness(name: "owner-a")
        try a.startDaemon()
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")

        let b = try DaemonHarness(name: "owner-b")
        chmod(b.root, 0o755)
        let config = b.root + "/syncd.yaml"
        try Data("""
            control_group: \(app.gid)
            folders:
              - path: \(b.root)/data
                secret: \(secret)
                owner: \(app.uid)
                group: \(app.gid)
                file_mode: "0640"
                dir_mode: "0750"

            """.utf8).write(to: URL(fileURLWithPath: config))
        chmod(config, 0o600)
        try b.startDaemon(extra: ["--config", config, "--join", try XCTUnwrap(a.status().listen)])

        let fm = FileManager.default
        try fm.createDirectory(atPath: a.root + "/data/base", withIntermediateDirectories: true)
        chmod(a.root + "/data/base", 0o755)
        try Data("page".utf8).write(to: URL(fileURLWithPath: a.root + "/data/base/1"))
        chmod(a.root + "/data/base/1", 0o644)
        try Data("#!/bin/sh\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/hook"))
        chmod(a.root + "/data/hook", 0o755)
        try waitInSync(a)
        func owner(_ path: String) -> String {
            var st = stat()
            guard lstat(path, &st) == 0 else { return "missing" }
            return "\(st.st_uid):\(st.st_gid) \(String(st.st_mode & 0o7777, radix: 8))"
        }
        XCTAssertEqual(owner(b.root + "/data/base/1"), "\(app.uid):\(app.gid) 640")
        XCTAssertEqual(owner(b.root + "/data/hook"), "\(app.uid):\(app.gid) 750", "an executable stays executable for its owner and group")
        XCTAssertEqual(owner(b.root + "/data/base"), "\(app.uid):\(app.gid) 750")
        XCTAssertEqual(owner(a.root + "/data/base/1"), "0:0 644", "the writer's own files are left alone")

        // The control socket is the group's, 0660, in a home the group may enter but not list.
        XCTAssertEqual(owner(b.home + "/syncd.sock"), "0:\(app.gid) 660")
        XCTAssertEqual(owner(b.home), "0:\(app.gid) 710")
        XCTAssertEqual(owner(b.home + "/index.db"), "0:0 600", "the secrets stay the daemon's")
        let executable = b.root + "/syncd-client"
        if DaemonHarness.serviceUserCanRun(DaemonHarness.binary) {
            try fm.createSymbolicLink(atPath: executable, withDestinationPath: DaemonHarness.binary)
        } else {
            try fm.copyItem(atPath: DaemonHarness.binary, toPath: executable)
            chmod(executable, 0o755)
        }
        let member = try b.cli(as: (app.uid, 12345), groups: [app.gid], executable: executable,
                               ["wait", b.root + "/data", "--timeout", "30"])
        XCTAssertEqual(member.status, 0, "a member of control_group runs syncd wait: \(member.stderr)")
        XCTAssertTrue(member.stdout.contains("in sync"), member.stdout)
        let stranger = try b.cli(as: (app.uid, 12345), executable: executable, ["status"])
        XCTAssertNotEqual(stranger.status, 0, "a user outside the group cannot use the socket")
        XCTAssertTrue(stranger.stderr.contains("not running"), stranger.stderr)
    }

    // MARK: a network that comes up late

    /// Two daemons start in a network namespace with no network (loopback down, no route: the
    /// beacon's send fails with ENETUNREACH, which closes its socket); the network comes up
    /// afterwards, and they find each other by the beacon alone (no --join).
    func test_lanBeacon_findsAPeer_whenTheNetworkComesUpAfterTheDaemons() throws {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter") else { throw XCTSkip("needs root, unshare and nsenter") }
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let ip else { throw XCTSkip("needs ip (iproute2)") }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        probe.arguments = ["-n", "--", "/bin/true"]
        try probe.run()
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else { throw XCTSkip("network namespaces are not available here") }
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        holder.arguments = ["-n", "--", "/bin/sleep", "120"]
        try holder.run()
        defer { holder.terminate(); holder.waitUntilExit() }
        let namespace = "/proc/\(holder.processIdentifier)/ns/net"
        let ours: String = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? ""
        let separate = poll(5) {
            let theirs: String = (try? FileManager.default.destinationOfSymbolicLink(atPath: namespace)) ?? ours
            return theirs != ours
        }
        XCTAssertTrue(separate, "the namespace exists")
        let enter = ["/usr/bin/nsenter", "--net=\(namespace)", "--"]
        func inNamespace(_ arguments: [String]) throws -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: enter[0])
            p.arguments = Array(enter.dropFirst()) + arguments
            try p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        let beaconPort = String(Int.random(in: 30000...39999))
        let d = try (0..<2).map { _ in try DaemonHarness(name: "late-net") }
        for h in d {
            try h.startDaemon(extra: ["--beacon-port", beaconPort], beacon: true, listen: "0.0.0.0:0", prefix: enter)
        }
        XCTAssertTrue(poll(10) { d.allSatisfy { $0.daemonLog.contains("LAN beacon cannot send") } },
                      "with no network the beacon cannot send: \(d[0].daemonLog.suffix(2000))")
        XCTAssertEqual(try inNamespace([ip, "link", "set", "lo", "up"]), 0)
        XCTAssertEqual(try inNamespace([ip, "route", "add", "default", "dev", "lo"]), 0)
        let met = try poll(20) {
            let r = try d[0].cli(["peers", "--json"])
            guard r.status == 0, let report = try? JSONDecoder().decode(PeersReport.self, from: Data(r.stdout.utf8)) else { return false }
            return report.members.filter { $0.status == "alive" }.count == 2
        }
        let listed = try d[0].cli(["peers"]).stdout
        XCTAssertTrue(met, "the daemons found each other once the network was up: \(listed)\n\(d[0].daemonLog.suffix(3000))")
        XCTAssertTrue(d[0].daemonLog.contains("LAN beacon sending again") || d[1].daemonLog.contains("LAN beacon sending again"),
                      String(d[0].daemonLog.suffix(2000)))
        DaemonHarness.stopTogether(d)
    }
}
