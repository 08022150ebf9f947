import Foundation
@testable import SyncDaemon
import SyncSecurity
import XCTest

/// `syncd bench peer`: two real daemons, the bench run as users run it, its JSON read back; and
/// the pure choices behind it (which folder, which peer) without a daemon.
final class PeerBenchIntegrationTests: XCTestCase, ClusterTesting {
    private func object(_ text: String) throws -> [String: Any] {
        let line = try XCTUnwrap(text.split(separator: "\n").first, "no output")
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], text)
    }

    func test_benchPeer_pullsTheRequestedBytesOverTheLiveSession_andChangesNothing() throws {
        let (d, _) = try cluster(2, name: "benchpeer")
        try Data("kept as it is".utf8).write(to: URL(fileURLWithPath: d[1].root + "/data/note.txt"))
        try waitInSync(d[1])
        let folder = try XCTUnwrap(d[0].status().folders.first?.path)
        let peer = try d[1].status().device
        let before = [tree(d[0].root + "/data"), tree(d[1].root + "/data")]

        let r = try d[0].cli(["bench", "peer", String(peer.prefix(7)).lowercased(), "--size", "8", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr + d[0].daemonLog.suffix(2000))
        let report = try object(r.stdout)
        XCTAssertEqual(report["bench"] as? String, "peer")
        XCTAssertEqual(report["peer"] as? String, peer, "the whole id of the peer the prefix named")
        XCTAssertEqual(report["folder"] as? String, folder, "the only folder is the default")
        XCTAssertEqual(report["bytes"] as? Int, 8 << 20)
        let seconds = try XCTUnwrap(report["seconds"] as? Double), rate = try XCTUnwrap(report["mbPerSecond"] as? Double)
        XCTAssertGreaterThan(seconds, 0)
        XCTAssertGreaterThan(rate, 0)
        XCTAssertEqual(rate, Double(8 << 20) / 1e6 / seconds, accuracy: rate * 1e-6, "MB/s is bytes / 10^6 / seconds")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(report["rttMilliseconds"] as? Double), 0)

        // The whole id, dashes and all, and the human line; from the other side too.
        let text = try d[1].cli(["bench", "peer", try d[0].status().device, "--folder", d[1].root + "/data", "--size", "1"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("1 MiB") && text.stdout.contains("MB/s") && text.stdout.contains("rtt"), text.stdout)

        XCTAssertEqual([tree(d[0].root + "/data"), tree(d[1].root + "/data")], before, "a bench touches no folder")
        XCTAssertTrue(try d[0].cli(["status"]).status == 0, "the daemon carries on")
        try waitInSync(d[0])
    }

    func test_benchPeer_givesOneClearLineAndNonZeroExit_forWhatItCannotMeasure() throws {
        let (d, _) = try cluster(2, name: "benchbad")
        try waitInSync(d[0])
        func fails(_ args: [String], _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try d[0].cli(["bench", "peer"] + args)
            XCTAssertNotEqual(r.status, 0, "\(args): \(r.stdout)", file: file, line: line)
            XCTAssertTrue(r.stderr.contains(expected), "\(args): \(r.stderr)", file: file, line: line)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)", file: file, line: line)
        }
        try fails(["2222222", "--json"], "no peer matches 2222222")
        try fails([try d[0].status().device], "is this device")
        try fails([try d[1].status().device, "--folder", d[0].root + "/elsewhere"], "not a shared folder")
        let zero = try d[0].cli(["bench", "peer", try d[1].status().device, "--size", "0"])
        XCTAssertNotEqual(zero.status, 0)
        XCTAssertTrue(zero.stderr.contains("--size must be from 1 to 4096 MiB"), zero.stderr)

        let idle = try DaemonHarness(name: "benchnone")
        let none = try idle.cli(["bench", "peer", "ABCDEFG"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.stderr.contains("not running"), none.stderr)

        // The peer stops: known to gossip, but no session to measure over.
        let peer = try d[1].status().device
        d[1].stopDaemon()
        var last = ""
        XCTAssertTrue(poll(15) {
            last = (try? d[0].cli(["bench", "peer", peer]).stderr) ?? ""
            return last.contains("not connected")
        }, last)
    }

    // MARK: the pure choices

    private func device(_ byte: UInt8) -> DeviceID { DeviceID(bytes: [UInt8](repeating: byte, count: 32))! }

    func test_choosePeer_takesAWholeIdOrAUniquePrefix_inAnyCaseWithOrWithoutDashes() throws {
        let a = device(1), b = device(2), me = device(3)
        let known = [a, b]
        XCTAssertEqual(try PeerBench.choosePeer(a.description, known: known, me: me), a)
        XCTAssertEqual(try PeerBench.choosePeer(String(b.description.prefix(10)).lowercased(), known: known, me: me), b)
        XCTAssertEqual(try PeerBench.choosePeer(b.description.replacingOccurrences(of: "-", with: ""), known: known, me: me), b)
        XCTAssertThrowsError(try PeerBench.choosePeer("", known: known, me: me))
        let twins = [DeviceID(bytes: [1, 1, 1, 1, 1] + [UInt8](repeating: 9, count: 27))!, a]
        XCTAssertThrowsError(try PeerBench.choosePeer(String(a.description.prefix(7)), known: twins, me: me)) { error in
            XCTAssertTrue("\(error)".contains("ambiguous") && "\(error)".contains(twins[0].description), "\(error)")
        }
        XCTAssertThrowsError(try PeerBench.choosePeer(me.description, known: known, me: me)) { error in
            XCTAssertTrue("\(error)".contains("this device"), "\(error)")
        }
        XCTAssertThrowsError(try PeerBench.choosePeer("ZZZZ", known: known, me: me)) { error in
            XCTAssertTrue("\(error)".contains("no peer matches ZZZZ"), "\(error)")
        }
    }

    func test_chooseFolder_defaultsToTheOnlyOne_andNamesTheChoicesOtherwise() throws {
        XCTAssertEqual(try PeerBench.chooseFolder(nil, shared: ["/a"]), "/a")
        XCTAssertEqual(try PeerBench.chooseFolder("/b", shared: ["/a", "/b"]), "/b")
        XCTAssertThrowsError(try PeerBench.chooseFolder(nil, shared: [])) { XCTAssertTrue("\($0)".contains("no folder"), "\($0)") }
        XCTAssertThrowsError(try PeerBench.chooseFolder(nil, shared: ["/a", "/b"])) {
            XCTAssertTrue("\($0)".contains("--folder") && "\($0)".contains("/a, /b"), "\($0)")
        }
        XCTAssertThrowsError(try PeerBench.chooseFolder("/c", shared: ["/a"])) { XCTAssertTrue("\($0)".contains("/c is not a shared folder"), "\($0)") }
    }

    func test_scratch_isOneFixedIncompressibleMiB() {
        let s = PeerBench.scratch
        XCTAssertEqual(s.count, 1 << 20)
        XCTAssertEqual(s, PeerBench.scratch)
        XCTAssertGreaterThan(Set(s.prefix(4096)).count, 200, "not a run of one byte")
    }
}
