import Foundation
@testable import SyncDaemon
import SyncSecurity
@testable import syncd
import XCTest

/// The pure parts behind `status`, the HTTP endpoint and the hooks, without a daemon: the time
/// is passed in, nothing sleeps.
final class StatusPartsTests: XCTestCase {
    // MARK: FolderProgress

    func test_progress_countsTheWholePendingSet_andItsRateAndETA() throws {
        var p = FolderProgress()
        // Nothing pending: no progress.
        XCTAssertNil(p.observe(.init(pendingFiles: 0, pendingBytes: 0, doneFiles: 5, doneBytes: 500, bytesIn: 900, applyingBytes: 0), now: 100))
        // Two batches: one applying (100 files, 1000 bytes), one queued (50 files, 1000 bytes).
        let start = try XCTUnwrap(p.observe(.init(pendingFiles: 150, pendingBytes: 2000, doneFiles: 5, doneBytes: 500, bytesIn: 900, applyingBytes: 1000), now: 100))
        XCTAssertEqual(start.doneBytes, 0)
        XCTAssertEqual(start.totalBytes, 2000)
        XCTAssertEqual(start.totalFiles, 150)
        XCTAssertEqual(start.percent, 0)
        XCTAssertNil(start.bytesPerSecond, "no rate in the first second")
        XCTAssertNil(start.etaSeconds)
        // 400 bytes of the applying batch received in 2 s: they count as done.
        let mid = try XCTUnwrap(p.observe(.init(pendingFiles: 150, pendingBytes: 2000, doneFiles: 5, doneBytes: 500, bytesIn: 1300, applyingBytes: 1000), now: 102))
        XCTAssertEqual(mid.doneBytes, 400)
        XCTAssertEqual(mid.totalBytes, 2000)
        XCTAssertEqual(mid.percent, 20)
        XCTAssertEqual(mid.bytesPerSecond, 200)
        XCTAssertEqual(mid.etaSeconds, 8)
        // The first batch left the apply; the second applies; a third (500 bytes) arrived: the total grows.
        let later = try XCTUnwrap(p.observe(.init(pendingFiles: 60, pendingBytes: 1500, doneFiles: 105, doneBytes: 1500, bytesIn: 1900, applyingBytes: 1000), now: 104))
        XCTAssertEqual(later.doneFiles, 100)
        XCTAssertEqual(later.totalFiles, 160)
        XCTAssertEqual(later.doneBytes, 1000, "the received bytes of the new batch start from zero")
        XCTAssertEqual(later.totalBytes, 2500)
        XCTAssertEqual(later.percent, 40)
        XCTAssertEqual(later.bytesPerSecond, 250)
        XCTAssertEqual(later.etaSeconds, 6)
        // Done: the set ends; the next one starts from zero.
        XCTAssertNil(p.observe(.init(pendingFiles: 0, pendingBytes: 0, doneFiles: 165, doneBytes: 3000, bytesIn: 3000, applyingBytes: 0), now: 110))
        let next = try XCTUnwrap(p.observe(.init(pendingFiles: 1, pendingBytes: 10, doneFiles: 165, doneBytes: 3000, bytesIn: 3000, applyingBytes: 10), now: 111))
        XCTAssertEqual(next.doneBytes, 0)
        XCTAssertEqual(next.totalBytes, 10)
    }

    func test_progress_ofDeletionsOnly_countsFiles() throws {
        var p = FolderProgress()
        _ = p.observe(.init(pendingFiles: 4, pendingBytes: 0, doneFiles: 0, doneBytes: 0, bytesIn: 0, applyingBytes: 0), now: 0)
        let half = try XCTUnwrap(p.observe(.init(pendingFiles: 2, pendingBytes: 0, doneFiles: 2, doneBytes: 0, bytesIn: 0, applyingBytes: 0), now: 1))
        XCTAssertEqual(half.percent, 50)
        XCTAssertEqual(half.totalFiles, 4)
    }

    // MARK: LagClock, FolderStateRule

    func test_lag_isHowLongAPeerHasBeenBehind() {
        var lag = LagClock()
        XCTAssertEqual(lag.observe("A", behind: false, now: 10), 0)
        XCTAssertEqual(lag.observe("A", behind: true, now: 11), 0)
        XCTAssertEqual(lag.observe("A", behind: true, now: 13.5), 2.5)
        XCTAssertEqual(lag.observe("B", behind: true, now: 14), 0, "per peer")
        XCTAssertEqual(lag.observe("A", behind: false, now: 15), 0)
        XCTAssertEqual(lag.observe("A", behind: true, now: 20), 0, "a new lag starts over")
    }

    func test_state_isSyncingWhilePending_inSyncOnlyWhenTheModelSaysSo() {
        XCTAssertEqual(FolderStateRule.state(scanner: "idle", pending: true, connectedPeers: 1, inSync: true), "syncing")
        XCTAssertEqual(FolderStateRule.state(scanner: "idle", pending: true, connectedPeers: 0, inSync: false), "syncing",
                       "a pull whose session dropped is still pending")
        XCTAssertEqual(FolderStateRule.state(scanner: "idle", pending: false, connectedPeers: 2, inSync: false), "syncing")
        XCTAssertEqual(FolderStateRule.state(scanner: "idle", pending: false, connectedPeers: 2, inSync: true), "in sync")
        XCTAssertEqual(FolderStateRule.state(scanner: "idle", pending: false, connectedPeers: 0, inSync: true), "idle",
                       "in sync with nobody is not said")
        for scanner in ["error", "unknown", "scanning"] {
            XCTAssertEqual(FolderStateRule.state(scanner: scanner, pending: true, connectedPeers: 1, inSync: true), scanner)
        }
    }

    // MARK: HookSchedule

    func test_hookSchedule_gathersPathsWhileRunning_andBacksOffAfterFailures() {
        var s = HookSchedule(backoff: 1, maxBackoff: 5)
        XCTAssertEqual(s.next(now: 0), .idle)
        s.applied(["a", "b"])
        XCTAssertEqual(s.next(now: 0), .run(["a", "b"]))
        s.applied(["c", "a"])
        s.applied(["c"])
        XCTAssertEqual(s.next(now: 0.5), .idle, "one run at a time")
        s.finished(["a", "b"], succeeded: true, now: 1)
        XCTAssertEqual(s.next(now: 1), .run(["c", "a"]), "gathered while running, without repeats")
        s.finished(["c", "a"], succeeded: false, now: 2)
        XCTAssertEqual(s.delay, 1)
        s.applied(["d"])
        XCTAssertEqual(s.next(now: 2.5), .wait(until: 3))
        XCTAssertEqual(s.next(now: 3), .run(["c", "a", "d"]), "the failed run's paths again, first")
        s.finished(["c", "a", "d"], succeeded: false, now: 3)
        XCTAssertEqual(s.delay, 2)
        XCTAssertEqual(s.next(now: 4), .wait(until: 5))
        XCTAssertEqual(s.next(now: 5), .run(["c", "a", "d"]))
        s.finished(["c", "a", "d"], succeeded: false, now: 5)
        XCTAssertEqual(s.delay, 4)
        _ = s.next(now: 9)
        s.finished(["c", "a", "d"], succeeded: false, now: 9)
        XCTAssertEqual(s.delay, 5, "capped")
        _ = s.next(now: 14)
        s.finished(["c", "a", "d"], succeeded: true, now: 14)
        XCTAssertEqual(s.delay, 0)
        XCTAssertEqual(s.next(now: 14), .idle, "nothing left after a success")
    }

    // MARK: HTTPAccess

    func test_access_bearerOrBasicPassword_comparedWhole() {
        let token = "0123456789abcdef-token"
        XCTAssertTrue(HTTPAccess.allows(authorization: nil, token: nil), "no token configured: open")
        XCTAssertFalse(HTTPAccess.allows(authorization: nil, token: token))
        XCTAssertTrue(HTTPAccess.allows(authorization: "Bearer \(token)", token: token))
        XCTAssertTrue(HTTPAccess.allows(authorization: "bearer  \(token) ", token: token))
        XCTAssertFalse(HTTPAccess.allows(authorization: "Bearer \(token.dropLast())", token: token))
        XCTAssertFalse(HTTPAccess.allows(authorization: "Bearer \(token)0", token: token))
        XCTAssertFalse(HTTPAccess.allows(authorization: token, token: token), "a bare token is not a scheme")
        let basic = "Basic " + Data("me:\(token)".utf8).base64EncodedString()
        XCTAssertTrue(HTTPAccess.allows(authorization: basic, token: token))
        XCTAssertFalse(HTTPAccess.allows(authorization: "Basic " + Data("\(token):x".utf8).base64EncodedString(), token: token),
                       "the token is the password, not the user")
        XCTAssertFalse(HTTPAccess.allows(authorization: "Basic !!!", token: token))
        XCTAssertTrue(HTTPAccess.isOpen("/healthz"))
        XCTAssertTrue(HTTPAccess.isOpen("/readyz"))
        XCTAssertFalse(HTTPAccess.isOpen("/"))
        XCTAssertFalse(HTTPAccess.isOpen("/healthz/../api/status"))
        XCTAssertTrue(HTTPAccess.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(HTTPAccess.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(HTTPAccess.constantTimeEquals([1, 2], [1, 2, 3]))
    }

    func test_loopback_isWhatMayGoWithoutAToken() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost"] { XCTAssertTrue(DaemonConfiguration.isLoopback(host), host) }
        for host in ["0.0.0.0", "10.0.0.1", "::", "127.0.0.1.example", "localhost.example"] {
            XCTAssertFalse(DaemonConfiguration.isLoopback(host), host)
        }
    }

    // MARK: rendering

    private func report(state: String = "syncing", progress: StatusReport.Folder.Progress? = nil, peers: [StatusReport.Folder.Peer] = []) -> StatusReport {
        var f = StatusReport.Folder(path: "/srv/<data>", folderId: "fid", access: "read-write", state: state, localFiles: 3,
                                    localDirectories: 1, localSymlinks: 0, localBytes: 3 * 1024 * 1024, sequence: 9, watching: true)
        f.progress = progress
        f.peers = peers
        f.conflicts = 1
        return StatusReport(device: "MFZWI3D-BONSGYC-XXXXXXX", version: "0.1.0", listen: "127.0.0.1:7700", folders: [f])
    }

    private var livePeer: StatusReport.Folder.Peer {
        var p = StatusReport.Folder.Peer(device: "ABCDEFG-HIJKLMN-OPQRSTU", connected: true, sequence: 5, needBytes: 0)
        p.name = "ABCDEFG"; p.rttMs = 1.25; p.sendLag = 4; p.receiveLag = 0; p.lagSeconds = 12
        return p
    }

    private var deadPeer: StatusReport.Folder.Peer {
        var p = StatusReport.Folder.Peer(device: "ZYXWVUT-SRQPONM", connected: false, sequence: 0, needBytes: 0)
        p.name = "ZYXWVUT"; p.gossip = "dead"; p.lastSeen = 1_000_000 - 75
        return p
    }

    func test_humanStatus_showsProgressPeersWithLag_andDeadPeersWithLastSeen() {
        let progress = StatusReport.Folder.Progress(doneFiles: 2, totalFiles: 8, doneBytes: 256 * 1024 * 1024, totalBytes: 512 * 1024 * 1024,
                                                    percent: 50, bytesPerSecond: 10 * 1024 * 1024, etaSeconds: 25.6)
        let text = StatusText.render(report(progress: progress, peers: [livePeer, deadPeer]), now: 1_000_000)
        XCTAssertTrue(text.contains("/srv/<data>  [read-write]  syncing\n"), text)
        XCTAssertTrue(text.contains("  3 files, 1 directories, 3.0 MiB, sequence 9\n"), text)
        XCTAssertTrue(text.contains("  pulling: 2 of 8 files, 256.0 MiB of 512.0 MiB (50.0 %), 10.0 MiB/s, ETA 26 s\n"), text)
        XCTAssertTrue(text.contains("  peer ABCDEFG  connected, rtt 1.2 ms, lacks 4 of our changes for 12 s\n"), text)
        XCTAssertTrue(text.contains("  peer ZYXWVUT  dead (gossip), last seen 1 min 15 s ago\n"), text)
        XCTAssertTrue(text.contains("  conflicts: 1 since start"), text)
    }

    func test_statusPage_isEscapedHTML_withProgressAndPeers_andNoScript() {
        let progress = StatusReport.Folder.Progress(doneFiles: 1, totalFiles: 4, doneBytes: 25, totalBytes: 100, percent: 25,
                                                    bytesPerSecond: 5, etaSeconds: 15)
        let events = [DaemonEvent(.batchApplied, folder: "/srv/<data>", time: 3600 * 7, paths: ["a&b.txt"], device: "ABCDEFG-HIJ"),
                      DaemonEvent(.conflict, folder: "/srv/<data>", time: 3600 * 7 + 1, paths: ["clash.txt"]),
                      DaemonEvent(.error, folder: "/srv/<data>", time: 3600 * 7 + 2, message: "disk <full>")]
        let html = StatusPage.render(report(progress: progress, peers: [livePeer, deadPeer]), recent: events, now: 1_000_000)
        XCTAssertTrue(html.contains("<tr data-folder=\"/srv/&lt;data&gt;\" data-state=\"syncing\">"), html)
        XCTAssertTrue(html.contains("<progress max=\"100\" value=\"25.0\">"), html)
        XCTAssertTrue(html.contains("ETA 15 s"), html)
        XCTAssertTrue(html.contains("<tr data-device=\"ABCDEFG-HIJKLMN-OPQRSTU\""), html)
        XCTAssertTrue(html.contains("4 to send, 0 to apply (12 s)"), html)
        XCTAssertTrue(html.contains("<td>dead</td>"), html)
        XCTAssertTrue(html.contains("1 min 15 s ago"), html)
        XCTAssertTrue(html.contains("<code>a&amp;b.txt</code>"), html)
        XCTAssertTrue(html.contains("07:00:00 UTC"), html)
        XCTAssertTrue(html.contains("<code>clash.txt</code>"), html)
        XCTAssertTrue(html.contains("disk &lt;full&gt;"), html)
        XCTAssertFalse(html.contains("<data>"), "nothing unescaped")
        XCTAssertFalse(html.contains("<script"))
    }

    func test_serverSentEvent_isTheKindAndOneLineOfJSON() {
        let e = DaemonEvent(.peerUp, folder: "/d", time: 1, device: "ABC")
        XCTAssertEqual(HTTPAccess.serverSentEvent(e), "event: peer-up\ndata: {\"device\":\"ABC\",\"folder\":\"/d\",\"kind\":\"peer-up\",\"time\":1}\n\n")
    }

    func test_readiness_waitsForAPeer_andForNoFolderInError() {
        var r = report(state: "in sync")
        r.folders[0].reachedPeer = true
        XCTAssertEqual(HTTPAccess.notReady(r), [])
        r.folders[0].reachedPeer = false
        XCTAssertEqual(HTTPAccess.notReady(r), ["1 folder has never reached a peer"])
        r.folders[0].state = "error"
        r.folders.append(r.folders[0])
        XCTAssertEqual(HTTPAccess.notReady(r), ["2 folders in error", "2 folders have never reached a peer"])
    }

    // MARK: DaemonEvents

    func test_events_reachEverySubscriber_andTheRecentListIsBounded() async {
        let events = DaemonEvents()
        let one = events.subscribe(), two = events.subscribe()
        events.emit(DaemonEvent(.peerUp, folder: "/f", device: "A"))
        events.emit(DaemonEvent(.peerDown, folder: "/f", device: "A"))
        events.finish()
        var first: [DaemonEvent.Kind] = [], second: [DaemonEvent.Kind] = []
        for await e in one { first.append(e.kind) }
        for await e in two { second.append(e.kind) }
        XCTAssertEqual(first, [.peerUp, .peerDown])
        XCTAssertEqual(second, [.peerUp, .peerDown])
        let late = events.subscribe()
        for await _ in late { XCTFail("a subscription after finish ends at once") }
        let many = DaemonEvents()
        for i in 0..<(DaemonEvents.recentCapacity + 10) { many.emit(DaemonEvent(.error, folder: "/f", message: "\(i)")) }
        XCTAssertEqual(many.recent.count, DaemonEvents.recentCapacity)
        XCTAssertEqual(many.recent.last?.message, "\(DaemonEvents.recentCapacity + 9)")
    }

    func test_folderEvents_tellARepeatedErrorOnce_andCount() async {
        let sink = DaemonEvents()
        let folder = FolderEvents(folder: "/f", sink: sink)
        folder.error("disk full")
        folder.error("disk full")
        folder.batchApplied(["x"], from: "A", seconds: 0.1)
        folder.error("disk full")
        folder.peer("A", up: true)
        XCTAssertEqual(sink.recent.map(\.kind), [.error, .batchApplied, .error, .peerUp])
        let tally = folder.tally
        XCTAssertEqual(tally.errors, 2)
        XCTAssertEqual(tally.applies, 1)
        XCTAssertEqual(tally.connected, ["A"])
        XCTAssertNotNil(tally.lastSeen["A"])
    }

    // MARK: names

    func test_deviceName_isTheFirstGroupOfTheID_fromTheShortIDToo() {
        for _ in 0..<20 {
            let id = DeviceID(publicKey: (0..<32).map { _ in UInt8.random(in: 0...255) })
            XCTAssertEqual(id.name, String(id.description.prefix(7)))
            XCTAssertEqual(DeviceID.name(of: id.short), id.name)
        }
    }
}
