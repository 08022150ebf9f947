import Foundation
import XCTest

/// Replicas that must never end different for good while `status` and `wait` say "in sync"
/// (the issue "Replication that cannot silently diverge"), with real daemons as the service user.
final class DivergenceIntegrationTests: XCTestCase, ClusterTesting {
    /// A change that fails to apply on B, then a later change of A in another manifest: the later
    /// one lands, the failed one is retried until it applies, and neither side's `wait` passes
    /// while B lacks it. (Before: B acknowledged A's later manifest, its floor moved past the
    /// failed change, A never resent it, and both `wait`s exited 0.)
    func test_failedChange_isRetriedUntilItApplies_andWaitFailsMeanwhile() throws {
        guard geteuid() == 0 else { throw XCTSkip("making a directory another user owns takes root") }
        let (d, _) = try cluster(2, name: "gap", unprivileged: true)
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let fm = FileManager.default
        try fm.createDirectory(atPath: b + "/docs", withIntermediateDirectories: false)   // root's: B's daemon cannot write in it
        try waitInSync(d[1])
        try d[0].write(Data("x".utf8), to: a + "/docs/x.txt")
        try d[0].waitForFolder(timeout: 10, "A indexed x.txt") { $0.localFiles == 1 }
        var deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !d[1].daemonLog.contains("cannot apply docs/x.txt") { usleep(50_000) }
        XCTAssertTrue(d[1].daemonLog.contains("cannot apply docs/x.txt"), "B tried x.txt: \(d[1].daemonLog.suffix(2000))")
        try d[0].write(Data("later".utf8), to: a + "/later.txt")   // a later manifest of A
        deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !fm.fileExists(atPath: b + "/later.txt") { usleep(50_000) }
        XCTAssertEqual(try? String(contentsOfFile: b + "/later.txt", encoding: .utf8), "later", "later changes still land")
        sleep(2)   // let any (wrong) acknowledgement travel
        let onA = try d[0].cli(["wait", a, "--timeout", "2"]), onB = try d[1].cli(["wait", b, "--timeout", "2"])
        XCTAssertNotEqual(onA.status, 0, "A's wait passed while B lacks docs/x.txt: \(onA.stdout)")
        XCTAssertNotEqual(onB.status, 0, "B's wait passed while docs/x.txt fails to apply: \(onB.stdout)")
        XCTAssertTrue(onB.stderr.contains("docs/x.txt"), "B's wait says which path fails: \(onB.stderr)")

        try d[1].own(b + "/docs")   // the obstacle goes away: the retry places the file
        try waitInSync(d[0])
        try waitInSync(d[1])
        XCTAssertEqual(try String(contentsOfFile: b + "/docs/x.txt", encoding: .utf8), "x")
        XCTAssertEqual(tree(b), tree(a))
    }
}

extension DivergenceIntegrationTests {
    /// `wait` is a barrier for writes that completed before it: a file made with `link()` (as git
    /// makes objects: IN_CREATE, no IN_CLOSE_WRITE, so the watcher holds it to settle) and a
    /// rename right after — both are on B when `wait` on A returns.
    func test_wait_includesAHardLinkedFileWrittenJustBefore() throws {
        let (d, _) = try cluster(2, name: "flush")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try waitInSync(d[0])
        for round in 0..<5 {
            let outside = d[0].root + "/object-\(round).tmp"
            try Data("object \(round)".utf8).write(to: URL(fileURLWithPath: outside))
            XCTAssertEqual(link(outside, a + "/object-\(round)"), 0)
            try Data("ref \(round)".utf8).write(to: URL(fileURLWithPath: a + "/ref.tmp"))
            XCTAssertEqual(rename(a + "/ref.tmp", a + "/ref"), 0)
            try waitInSync(d[0])
            XCTAssertEqual(try? String(contentsOfFile: b + "/object-\(round)", encoding: .utf8), "object \(round)",
                           "round \(round): wait returned before B had the linked object")
            XCTAssertEqual(try? String(contentsOfFile: b + "/ref", encoding: .utf8), "ref \(round)")
        }
    }

    /// A receiver's `wait` waits for what its peer announced: B does not say "in sync" while A's
    /// new files are still arriving.
    func test_receiverWait_waitsForWhatThePeerAnnounced() throws {
        let (d, _) = try cluster(2, name: "recv")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try waitInSync(d[1])
        for i in 0..<400 { try Data(repeating: UInt8(i % 251), count: 16_384).write(to: URL(fileURLWithPath: a + "/f\(i)")) }
        try d[0].waitForFolder(timeout: 20, "A indexed 400 files") { $0.localFiles == 400 }
        usleep(300_000)   // A's announcement (its first manifest, its digest) reaches B: B cannot wait for what it was never told
        try waitInSync(d[1])
        let files = try FileManager.default.contentsOfDirectory(atPath: b).filter { $0.hasPrefix("f") }
        XCTAssertEqual(files.count, 400, "B's wait returned with \(files.count) of 400 files")
    }
}

import GRDB

extension DivergenceIntegrationTests {
    /// Anti-entropy: B loses a file and its index row while stopped (a damaged disk, an old
    /// backup restored), so B's applied floor says it holds A's whole index but it lacks one path.
    /// Sequences agree, so nothing would ever be resent; the digests differ, so both resend their
    /// index in full and B gets the file back — and `wait` does not pass until it has.
    func test_indexesThatDifferBehindEqualSequences_areRepairedByTheDigests() throws {
        let (d, _) = try cluster(2, name: "digest")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        for i in 0..<5 { try Data("file \(i)".utf8).write(to: URL(fileURLWithPath: a + "/f\(i).txt")) }
        try waitInSync(d[0])
        try waitInSync(d[1])
        d[1].stopDaemon()
        try FileManager.default.removeItem(atPath: b + "/f3.txt")
        let db = try DatabaseQueue(path: d[1].home + "/index.db")
        try db.write { try $0.execute(sql: "DELETE FROM file WHERE path = 'f3.txt'") }
        try db.close()
        let seed = try XCTUnwrap(d[0].status().listen)
        try d[1].startDaemon(extra: ["--join", seed])
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !FileManager.default.fileExists(atPath: b + "/f3.txt") { usleep(50_000) }
        XCTAssertEqual(try? String(contentsOfFile: b + "/f3.txt", encoding: .utf8), "file 3",
                       "the digests did not repair B: \(d[1].daemonLog.suffix(3000))")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))
    }
}
