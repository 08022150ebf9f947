@preconcurrency import Crypto
import Foundation
@testable import SyncDaemon
import SyncSecurity
import SyncWire
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

    /// A raw peer against a real daemon: answers come from the scratch buffer, never the folder;
    /// a peer that asks without reading, or answers with the wrong length, loses its session.
    func test_hostilePeers_getScratchBytesOnly_andLoseTheirSession_forAFloodOrAWrongAnswer() throws {
        let h = try DaemonHarness(name: "benchhostile")
        try h.startDaemon()
        let add = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let keys = try FolderSecret(parsing: String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")).keys
        try Data("folder content".utf8).write(to: URL(fileURLWithPath: h.root + "/data/file.txt"))
        let port = try h.sessionPort()

        let honest = try PeerClient(port: port, folderID: keys.folderID, psk: keys.sessionPSK)
        XCTAssertTrue(honest.handshake())
        honest.send(.benchRequest(id: 5, size: 1000))
        XCTAssertEqual(honest.next(where: { if case .benchData = $0 { true } else { false } }),
                       .message(.benchData(id: 5, bytes: Array(PeerBench.scratch.prefix(1000)))))
        honest.send(.benchRequest(id: 6, size: 0))
        XCTAssertEqual(honest.next(where: { if case .benchData = $0 { true } else { false } }), .message(.benchData(id: 6, bytes: [])))

        // Asks for 200 MiB and reads nothing: past 32 answers not yet written, the session closes.
        let flooder = try PeerClient(port: port, folderID: keys.folderID, psk: keys.sessionPSK)
        XCTAssertTrue(flooder.handshake())
        for id in 0..<200 { flooder.send(.benchRequest(id: UInt32(id), size: SessionMessage.maxBenchBytes)) }
        XCTAssertTrue(poll(10) { h.daemonLog.contains("more than 32 bench requests outstanding") }, h.daemonLog.suffix(2000).description)
        XCTAssertTrue(honest.isAlive(1), "other sessions carry on")

        // The daemon benches a peer that answers its probe with 3 bytes: the run fails, the session closes.
        let liarKey = Curve25519.KeyAgreement.PrivateKey()
        let liar = try PeerClient(port: port, folderID: keys.folderID, psk: keys.sessionPSK, key: liarKey)
        XCTAssertTrue(liar.handshake())
        XCTAssertNotEqual(liar.next(where: { if case .hello = $0 { true } else { false } }), .closed, "attached: the daemon said hello")
        let liarID = DeviceID(publicKey: Array(liarKey.publicKey.rawRepresentation))
        nonisolated(unsafe) var cli: DaemonHarness.Result?
        nonisolated(unsafe) let harness = h   // read by the one thread below, while this one plays the peer
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            cli = try? harness.cli(["bench", "peer", liarID.description, "--size", "1"])
            done.signal()
        }
        guard case .message(.benchRequest(let id, let size)) = liar.next(where: { if case .benchRequest = $0 { true } else { false } }) else {
            return XCTFail("no bench request")
        }
        XCTAssertEqual(size, 0, "a probe first")
        liar.send(.benchData(id: id, bytes: [1, 2, 3]))
        XCTAssertEqual(done.wait(timeout: .now() + 15), .success)
        XCTAssertNotEqual(cli?.status, 0)
        XCTAssertTrue(cli?.stderr.contains("answered 3 bytes to a bench request of 0") == true, cli?.stderr ?? "")
        XCTAssertEqual(liar.next(where: { _ in false }), .closed, "the liar's session is closed")
        XCTAssertTrue(honest.isAlive(2))
        XCTAssertEqual(try String(contentsOfFile: h.root + "/data/file.txt", encoding: .utf8), "folder content")
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

    func test_scratch_isOneFixedIncompressibleFrameful() {
        let s = PeerBench.scratch
        XCTAssertEqual(s.count, Int(SessionMessage.maxBenchBytes))
        XCTAssertEqual(s, PeerBench.scratch)
        XCTAssertGreaterThan(Set(s.prefix(4096)).count, 200, "not a run of one byte")
    }
}
