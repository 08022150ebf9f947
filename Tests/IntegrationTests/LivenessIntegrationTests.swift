import Foundation
import XCTest

/// Drops packets on loopback with iptables: a link that goes silent without closing, which TCP
/// alone notices only after its retransmission backoff. Only the given ports on `lo`, only
/// 127.0.0.0/8; every rule is removed by `heal()` (call it in a `defer`).
final class Blackhole {
    private var rules: [[String]] = []

    /// Why the test cannot run here, or nil.
    static var unavailable: String? {
        guard geteuid() == 0 else { return "needs root for iptables" }
        guard let path = ["/usr/sbin/iptables", "/sbin/iptables"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { return "iptables is not installed (scripts/deps.sh installs it)" }
        return (try? run(path, ["-w", "-S", "INPUT"])) == 0 ? nil : "iptables cannot list INPUT here (no CAP_NET_ADMIN?)"
    }

    static var iptables: String { FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables") ? "/usr/sbin/iptables" : "/sbin/iptables" }

    /// Drops every `protocols` packet on `lo` to or from each of `ports`.
    init(ports: [Int], protocols: [String] = ["tcp"]) throws {
        for port in ports {
            for proto in protocols {
                for direction in ["--dport", "--sport"] {
                    let rule = ["INPUT", "-i", "lo", "-s", "127.0.0.0/8", "-d", "127.0.0.0/8", "-p", proto, direction, String(port), "-j", "DROP"]
                    guard try Self.run(Self.iptables, ["-w", "-I"] + rule) == 0 else {
                        heal()
                        throw DaemonHarness.HarnessError("iptables -I \(rule.joined(separator: " ")) failed")
                    }
                    rules.append(rule)
                }
            }
        }
    }

    func heal() {
        for rule in rules.reversed() { _ = try? Self.run(Self.iptables, ["-w", "-D"] + rule) }
        rules = []
    }

    deinit { heal() }

    @discardableResult
    static func run(_ path: String, _ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}

/// Real daemons whose session goes silent without closing (Protocol/wire.md, "Keepalive").
final class LivenessIntegrationTests: XCTestCase, ClusterTesting {
    func test_silentSession_isClosedByTheKeepalive_andDataMovesSoonAfterTheLinkHeals() throws {
        if let why = Blackhole.unavailable { throw XCTSkip(why) }
        let (d, _) = try cluster(2, name: "silent")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try Data("before".utf8).write(to: URL(fileURLWithPath: a + "/before.txt"))
        try waitInSync(d[0])
        XCTAssertTrue(FileManager.default.fileExists(atPath: b + "/before.txt"))

        // TCP only: gossip (UDP) keeps saying the peer is alive, so only the keepalive can tell.
        let hole = try Blackhole(ports: [try d[0].sessionPort(), try d[1].sessionPort()])
        defer { hole.heal() }
        try Data("written during the partition".utf8).write(to: URL(fileURLWithPath: a + "/during.txt"))
        Thread.sleep(forTimeInterval: 8)
        hole.heal()
        let healed = Date()

        let deadline = healed.addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: b + "/during.txt") && Date() < deadline { usleep(20_000) }
        let took = Date().timeIntervalSince(healed)
        XCTAssertTrue(FileManager.default.fileExists(atPath: b + "/during.txt"), "never arrived:\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertLessThan(took, 5, "the file arrived \(String(format: "%.1f", took)) s after the link healed")
        let logs = d[0].daemonLog + d[1].daemonLog
        XCTAssertTrue(logs.contains("silent for 6 s; closing and redialling"),
                      "the dialling side closes the silent session:\n\(d[0].daemonLog.suffix(3000))\n\(d[1].daemonLog.suffix(3000))")
    }
}
