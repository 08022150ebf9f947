import Foundation
import XCTest

/// One peer of three goes silent (its session packets dropped, nothing reset) just as another
/// writes a big file: the third peer's pull, spread over both, must not stall on the silent one
/// (Protocol/wire.md, "Replication" 4 and "Keepalive").
final class UnreachablePeerIntegrationTests: XCTestCase, ClusterTesting {
    /// The keepalive closes the silent session within its 6 s timeout; the requests in flight to
    /// it fail at once and the rest of the file comes from the writer.
    func test_silentSource_isDroppedByTheKeepalive_andThePullFinishesFromTheOthers() throws {
        try pullWhileOneSourceIsSilent(name: "stall", daemonArgs: [], limit: 12)
    }

    /// The keepalive is made too slow to help (60 s): only the RTT-based request timeout
    /// (`FolderExchange.requestTimeout(for:)`, 2 s on loopback) moves the pull on to the writer.
    func test_silentSource_withASlowKeepalive_theRequestTimeoutStillMovesThePullOn() throws {
        try pullWhileOneSourceIsSilent(name: "stallrtt", daemonArgs: ["--keepalive-interval", "20", "--keepalive-timeout", "60"], limit: 20)
    }

    // MARK: - The scenario

    private func pullWhileOneSourceIsSilent(name: String, daemonArgs: [String], limit: TimeInterval,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        if let why = Blackhole.unavailable { throw XCTSkip(why) }
        let d = try threeDaemons(name: name, extra: daemonArgs)
        // The device with the smaller short id dials (Daemon.dialPeers): C must be the largest,
        // so both of its sessions arrive on C's own port and dropping that port silences both.
        let ids = try d.map { try $0.status().device }
        let order = d.indices.sorted { Self.shortIDDigits(ids[$0]).lexicographicallyPrecedes(Self.shortIDDigits(ids[$1])) }
        let (a, b, c) = (d[order[0]], d[order[1]], d[order[2]])
        let cID = ids[order[2]]

        // In sync, with every pair connected.
        try Data("before".utf8).write(to: URL(fileURLWithPath: a.root + "/data/before.txt"))
        try waitForSessions(d)
        for h in d { try waitInSync(h, file: file, line: line) }
        for h in [b, c] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: h.root + "/data/before.txt"), "not in sync before the test", file: file, line: line)
        }
        let cPort = try c.sessionPort()
        let cSockets = try Self.establishedTCPLocalPorts(of: c), aPort = try a.sessionPort(), bPort = try b.sessionPort()
        let onCPort = cSockets.filter { $0 == cPort }.count
        XCTAssertGreaterThanOrEqual(onCPort, 2, "both of C's sessions should arrive on its port \(cPort); A \(aPort) B \(bPort); "
            + "C's established sockets' local ports \(cSockets); C's log:\n\(c.daemonLog.suffix(3000))", file: file, line: line)

        // Prepared outside the folder, so the clock below measures replication, not writing.
        let big = Self.incompressible(32 << 20, seed: 0x5EED)
        try big.write(to: URL(fileURLWithPath: b.root + "/big.tmp"))
        let small = (0..<5).map { i in ("small-\(i).txt", Data("small file \(i) ".utf8) + Self.incompressible(1024 * (i + 1), seed: UInt64(i + 1))) }

        // TCP only: gossip (UDP) keeps saying C is alive, so nothing but the sessions can tell.
        let hole = try Blackhole(ports: [cPort])
        defer { hole.heal() }
        let start = Date()
        XCTAssertEqual(rename(b.root + "/big.tmp", b.root + "/data/big.bin"), 0, file: file, line: line)
        for (n, content) in small { try content.write(to: URL(fileURLWithPath: b.root + "/data/" + n)) }

        let expected = [("big.bin", big)] + small
        func arrived() -> Bool {
            expected.allSatisfy { n, content in
                var st = stat()
                return stat(a.root + "/data/" + n, &st) == 0 && Int(st.st_size) == content.count
            }
        }
        let cap: TimeInterval = 120
        var cDropped: TimeInterval?
        while !arrived() && Date().timeIntervalSince(start) < cap {
            if cDropped == nil, let peers = try? connectedPeers(a), peers[cID] == false { cDropped = Date().timeIntervalSince(start) }
            usleep(20_000)
        }
        let took = Date().timeIntervalSince(start)
        let done = arrived()
        let seconds = { (t: TimeInterval) in String(format: "%.1f", t) }
        let evidence = "A dropped its session to C after \(cDropped.map(seconds) ?? "—") s; A's log:\n\(a.daemonLog.suffix(3000))"
        XCTAssertTrue(done, "A did not have B's new files within \(Int(cap)) s (C silent); \(evidence)", file: file, line: line)
        XCTAssertLessThanOrEqual(took, limit, "A had B's 32 MiB file and 5 small files \(seconds(took)) s after they were written, "
                                 + "with C silent (limit \(Int(limit)) s); \(evidence)", file: file, line: line)
        print("[unreachable-peer] \(name): A had everything after \(seconds(took)) s (limit \(Int(limit)) s); "
              + "A dropped C after \(cDropped.map(seconds) ?? "—") s")
        if done {
            for (n, content) in expected {
                XCTAssertEqual(FileManager.default.contents(atPath: a.root + "/data/" + n), content, "\(n) differs on A", file: file, line: line)
            }
        }

        // The link heals: all three converge, C included.
        hole.heal()
        let healed = Date()
        try waitInSync(a, timeout: 60, file: file, line: line)
        try waitInSync(b, timeout: 60, file: file, line: line)
        let want = tree(b.root + "/data")
        let deadline = Date().addingTimeInterval(60)
        while (tree(a.root + "/data") != want || tree(c.root + "/data") != want) && Date() < deadline { usleep(100_000) }
        XCTAssertEqual(tree(a.root + "/data"), want, "A converges with B", file: file, line: line)
        XCTAssertEqual(tree(c.root + "/data"), want, "C catches up after the link heals:\n\(c.daemonLog.suffix(3000))", file: file, line: line)
        print("[unreachable-peer] \(name): C caught up \(seconds(Date().timeIntervalSince(healed))) s after the link healed; A: "
              + a.daemonLog.split(separator: "\n").filter { $0.contains("applied") }.map { $0.drop { $0 != "]" }.dropFirst(2) }.joined(separator: "; "))
    }

    // MARK: - Helpers

    /// Three daemons joined through the first, sharing one read-write folder; `extra` goes to every daemon.
    private func threeDaemons(name: String, extra: [String]) throws -> [DaemonHarness] {
        let first = try DaemonHarness(name: "\(name)0")
        try first.startDaemon(extra: extra)
        let seed = try XCTUnwrap(first.status().listen)
        let add = try first.cli(["add", first.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        var daemons = [first]
        for i in 1..<3 {
            let h = try DaemonHarness(name: "\(name)\(i)")
            try h.startDaemon(extra: extra + ["--join", seed])
            let r = try h.cli(["add", h.root + "/data", "--secret", secret])
            XCTAssertEqual(r.status, 0, r.stderr)
            daemons.append(h)
        }
        return daemons
    }

    private struct PeerStatus: Decodable {
        struct Folder: Decodable {
            struct Peer: Decodable { var device: String; var connected: Bool }
            var peers: [Peer]?
        }
        var folders: [Folder]
    }

    /// Device (as printed) → whether `h` has a session to it, for the first folder.
    private func connectedPeers(_ h: DaemonHarness) throws -> [String: Bool] {
        let r = try h.cli(["status", "--json"])
        let s = try JSONDecoder().decode(PeerStatus.self, from: Data(r.stdout.utf8))
        return Dictionary((s.folders.first?.peers ?? []).map { ($0.device, $0.connected) }, uniquingKeysWith: { $0 || $1 })
    }

    /// Until every daemon has a session to both others.
    private func waitForSessions(_ d: [DaemonHarness], timeout: TimeInterval = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [[String: Bool]] = []
        repeat {
            last = try d.map(connectedPeers)
            if last.allSatisfy({ $0.values.filter { $0 }.count == d.count - 1 }) { return }
            usleep(50_000)
        } while Date() < deadline
        XCTFail("not every pair connected within \(timeout) s: \(last)")
    }

    /// The base32 digits (0–31) of a printed device id's first group: they order devices as
    /// their short ids (the first 8 bytes, big-endian) do.
    static func shortIDDigits(_ printed: String) -> [UInt8] {
        let chars = printed.uppercased().utf8.filter { $0 != UInt8(ascii: "-") }
        return chars.prefix(13).map { $0 >= UInt8(ascii: "A") ? $0 - UInt8(ascii: "A") : $0 - UInt8(ascii: "2") + 26 }
    }

    /// Local ports of the daemon's established TCP sockets (/proc/PID/fd matched against /proc/net/tcp).
    static func establishedTCPLocalPorts(of h: DaemonHarness) throws -> [Int] {
        let pid = try XCTUnwrap(h.process?.processIdentifier)
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        let inodes = Set(fds.compactMap { fd -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                  target.hasPrefix("socket:[") else { return nil }
            return String(target.dropFirst(8).dropLast())
        })
        let table = try readProcFile("/proc/net/tcp")
        return table.split(separator: "\n").dropFirst().compactMap { row in
            let f = row.split(separator: " ")
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            guard f.count > 9, f[3] == "01", inodes.contains(String(f[9])),
                  let port = f[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }) else { return nil }
            return port
        }
    }

    /// The whole of a /proc file (they report size 0, so a reader that trusts the size gets one page).
    static func readProcFile(_ path: String) throws -> String {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var all = Data()
        while let more = try handle.read(upToCount: 1 << 16), !more.isEmpty { all += more }
        return String(decoding: all, as: UTF8.self)
    }

    /// `count` bytes of SplitMix64 output: no two chunks alike, nothing to compress.
    static func incompressible(_ count: Int, seed: UInt64) -> Data {
        var x = seed
        var words = [UInt64](repeating: 0, count: (count + 7) / 8)
        for i in words.indices {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            words[i] = z ^ (z >> 31)
        }
        return words.withUnsafeBytes { Data($0.prefix(count)) }
    }
}
