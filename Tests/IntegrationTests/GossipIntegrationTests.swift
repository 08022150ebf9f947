import Foundation
import XCTest

/// Real daemons, real UDP and TCP on loopback.
final class GossipIntegrationTests: XCTestCase {
    struct Peers: Decodable {
        struct Member: Decodable {
            struct Folder: Decodable { var folderId: String; var sequence: UInt64 }
            var device: String
            var address: String
            var status: String
            var incarnation: UInt64
            var folders: [Folder]
        }
        var members: [Member]
    }

    func peers(_ h: DaemonHarness) throws -> Peers {
        let r = try h.cli(["peers", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try JSONDecoder().decode(Peers.self, from: Data(r.stdout.utf8))
    }

    func waitUntil(_ what: String, timeout: TimeInterval, _ condition: () throws -> Bool) rethrows {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(100_000)
        }
        XCTFail("\(what) did not happen within \(timeout) s")
    }

    func test_fiveDaemons_joinThroughOneSeed_detectFailureAndLeave_andRejoinWithoutSeeds() throws {
        let seed = try DaemonHarness(name: "g0")
        try seed.startDaemon(extra: [])
        let seedAddress = try XCTUnwrap(seed.status().listen)
        var daemons = [seed]
        for i in 1..<5 {
            let h = try DaemonHarness(name: "g\(i)")
            try h.startDaemon(extra: ["--join", seedAddress])
            daemons.append(h)
        }
        let addresses = try daemons.map { try XCTUnwrap($0.status().listen) }
        try waitUntil("all five see all five alive", timeout: 15) {
            try daemons.allSatisfy { h in
                let p = try peers(h)
                return Set(p.members.filter { $0.status == "alive" }.map(\.address)) == Set(addresses)
            }
        }

        // A folder and its sequence are announced: the others see it without asking.
        let add = try daemons[2].cli(["add", daemons[2].root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let folderID = try XCTUnwrap(daemons[2].status().folders.first?.folderId)
        try "hello".write(toFile: daemons[2].root + "/data/a.txt", atomically: true, encoding: .utf8)
        try waitUntil("the folder's sequence reaches a peer", timeout: 5) {
            try peers(daemons[4]).members.contains { m in m.folders.contains { $0.folderId == folderID && $0.sequence >= 1 } }
        }

        // kill -9: everyone else reports it dead. SIGTERM: everyone reports it left.
        daemons[1].stopDaemon(signal: SIGKILL)
        try waitUntil("the killed daemon is reported dead", timeout: 30) {
            try [0, 2, 3, 4].allSatisfy { i in try peers(daemons[i]).members.first { $0.address == addresses[1] }?.status == "dead" }
        }
        daemons[3].stopDaemon(signal: SIGTERM)
        try waitUntil("the stopped daemon is reported left", timeout: 10) {
            try [0, 2, 4].allSatisfy { i in try peers(daemons[i]).members.first { $0.address == addresses[3] }?.status == "left" }
        }

        // A restarted daemon rejoins from its known-members snapshot, with no --join at all.
        daemons[4].stopDaemon(signal: SIGKILL)
        try daemons[4].startDaemon(extra: [])
        let newAddress = try XCTUnwrap(daemons[4].status().listen)
        try waitUntil("the restarted daemon is back in the seed's view", timeout: 20) {
            try peers(seed).members.contains { $0.address == newAddress && $0.status == "alive" }
        }
    }

    func test_gossipKey_shouldKeepStrangersOut() throws {
        let key = String(repeating: "ab", count: 32)
        let a = try DaemonHarness(name: "ka"), b = try DaemonHarness(name: "kb"), stranger = try DaemonHarness(name: "kc")
        try a.startDaemon(extra: ["--gossip-key", key])
        let seed = try XCTUnwrap(a.status().listen)
        try b.startDaemon(extra: ["--gossip-key", key, "--join", seed])
        try stranger.startDaemon(extra: ["--join", seed])
        try waitUntil("the keyed pair see each other", timeout: 10) {
            try peers(a).members.filter { $0.status == "alive" }.count == 2
        }
        sleep(2)
        XCTAssertEqual(try peers(a).members.count, 2, "the stranger without the key never got in")
        XCTAssertEqual(try peers(stranger).members.count, 1)
        let bad = try DaemonHarness(name: "kd")
        let r = try bad.cli(["daemon", "--listen", "127.0.0.1:0", "--gossip-key", "short"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--gossip-key must be 32 bytes"), r.stderr)
    }

    /// Two daemons with no seeds find each other by the LAN beacon (UDP broadcast), where the
    /// network has a broadcast-capable interface.
    func test_lanBeacon_shouldIntroduceDaemonsWithoutSeeds() throws {
        guard (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8))?.split(separator: "\n").count ?? 0 > 1 else {
            throw XCTSkip("no network interface with a route: broadcasts cannot leave this host")
        }
        let port = String(Int.random(in: 20000...30000))
        let a = try DaemonHarness(name: "ba"), b = try DaemonHarness(name: "bb")
        try a.startDaemon(extra: ["--beacon-port", port], beacon: true)
        try b.startDaemon(extra: ["--beacon-port", port], beacon: true)
        try waitUntil("the beacon introduced the two daemons", timeout: 15) {
            try peers(a).members.filter { $0.status == "alive" }.count == 2
        }
    }
}
