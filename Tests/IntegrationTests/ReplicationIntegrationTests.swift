import Foundation
import XCTest

/// Helpers for tests that run real daemons on loopback sharing a folder.
protocol ClusterTesting: XCTestCase {}

extension ClusterTesting {
    /// Starts `count` daemons joined through the first one; the first shares a new folder and the
    /// others join it with `secrets[i]` (default: the same read-write secret). `unprivileged` runs
    /// every daemon as the service user (DaemonHarness).
    func cluster(_ count: Int, name: String, unprivileged: Bool = false,
                 secrets: ((String) -> [String?])? = nil) throws -> (daemons: [DaemonHarness], secret: String) {
        let first = try DaemonHarness(name: "\(name)0", unprivileged: unprivileged)
        try first.startDaemon()
        let seed = try XCTUnwrap(first.status().listen)
        let add = try first.cli(["add", first.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        var daemons = [first]
        let chosen = secrets?(secret) ?? Array(repeating: secret, count: count)
        for i in 1..<count {
            let h = try DaemonHarness(name: "\(name)\(i)", unprivileged: unprivileged)
            try h.startDaemon(extra: ["--join", seed])
            let r = try h.cli(["add", h.root + "/data", "--secret", chosen[i] ?? secret])
            XCTAssertEqual(r.status, 0, r.stderr)
            daemons.append(h)
        }
        return (daemons, secret)
    }

    /// Path → (kind, content hash or link target, mode) of everything outside `.syncd/`.
    func tree(_ root: String) -> [String: String] {
        var out: [String: String] = [:]
        let fm = FileManager.default
        guard let e = fm.enumerator(atPath: root) else { return out }
        while let rel = e.nextObject() as? String {
            if rel == ".syncd" || rel.hasPrefix(".syncd/") { e.skipDescendants(); continue }
            let path = root + "/" + rel
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let mode = String(st.st_mode & 0o7777, radix: 8)
            switch st.st_mode & S_IFMT {
            case S_IFDIR: out[rel] = "dir \(mode)"
            case S_IFLNK: out[rel] = "link " + ((try? fm.destinationOfSymbolicLink(atPath: path)) ?? "?")
            default: out[rel] = "file \(mode) " + String(fm.contents(atPath: path).map { $0.hashValue } ?? 0)
            }
        }
        return out
    }

    func waitInSync(_ h: DaemonHarness, timeout: Int = 30, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try h.cli(["wait", h.root + "/data", "--timeout", String(timeout)], timeout: Double(timeout + 30))
        XCTAssertEqual(r.status, 0, "wait failed: \(r.stderr)\n\(h.daemonLog.suffix(2000))", file: file, line: line)
    }
}

/// Real daemons on loopback sharing folders.
final class ReplicationIntegrationTests: XCTestCase, ClusterTesting {
    func test_twoPeers_syncEveryKindOfChange_andWaitMeansTheDataIsThere() throws {
        let (d, _) = try cluster(2, name: "pair")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let fm = FileManager.default
        try fm.createDirectory(atPath: a + "/docs/deep", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: a + "/empty", withIntermediateDirectories: true)
        try Data("hello".utf8).write(to: URL(fileURLWithPath: a + "/docs/hello.txt"))
        try Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }).write(to: URL(fileURLWithPath: a + "/docs/deep/big.bin"))
        try Data("#!/bin/sh\necho hi\n".utf8).write(to: URL(fileURLWithPath: a + "/run.sh"))
        chmod(a + "/run.sh", 0o755)
        try fm.createSymbolicLink(atPath: a + "/link", withDestinationPath: "docs/hello.txt")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a), "wait returned, so B must already hold everything")
        XCTAssertEqual(tree(b)["run.sh"]?.hasPrefix("file 755"), true)
        XCTAssertEqual(tree(b)["empty"], "dir 755")
        XCTAssertEqual(tree(b)["link"], "link docs/hello.txt")

        // Edit on B, back to A.
        try Data("hello from B".utf8).write(to: URL(fileURLWithPath: b + "/docs/hello.txt"))
        try waitInSync(d[1])
        XCTAssertEqual(try String(contentsOfFile: a + "/docs/hello.txt", encoding: .utf8), "hello from B")

        // Delete, rename a directory, move a file: the deleted file goes to B's trash.
        try fm.removeItem(atPath: a + "/run.sh")
        try fm.moveItem(atPath: a + "/docs", toPath: a + "/manuals")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))
        XCTAssertNil(tree(b)["run.sh"])
        let trash = try fm.subpathsOfDirectory(atPath: b + "/.syncd/trash")
        XCTAssertTrue(trash.contains { $0.hasSuffix("run.sh") }, "deletions go to the trash: \(trash)")
        let status = try d[1].cli(["status", "--json"]).stdout
        for field in ["\"needFiles\"", "\"needBytes\"", "\"conflicts\"", "\"bytesIn\"", "\"bytesOut\"", "\"peers\"", "\"connected\":true"] {
            XCTAssertTrue(status.contains(field), "status lacks \(field): \(status)")
        }
    }

    func test_threePeers_concurrentEdits_convergeWithConflictCopies() throws {
        let (d, _) = try cluster(3, name: "tri")
        let paths = d.map { $0.root + "/data/shared.txt" }
        try Data("v0".utf8).write(to: URL(fileURLWithPath: paths[0]))
        try waitInSync(d[0])
        for h in d { try waitInSync(h) }
        // Three edits at once, before any can travel.
        for (i, p) in paths.enumerated() { try Data("edit from \(i)".utf8).write(to: URL(fileURLWithPath: p)) }
        func contents(_ h: DaemonHarness) -> Set<String> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: h.root + "/data")) ?? []).filter { !$0.hasPrefix(".") }
                .compactMap { try? String(contentsOfFile: h.root + "/data/" + $0, encoding: .utf8) })
        }
        let everything: Set<String> = ["edit from 0", "edit from 1", "edit from 2"]
        let deadline = Date().addingTimeInterval(30)
        var trees = d.map { tree($0.root + "/data") }
        while Date() < deadline && !(trees[0] == trees[1] && trees[1] == trees[2] && contents(d[0]).isSuperset(of: everything)) {
            usleep(200_000)
            trees = d.map { tree($0.root + "/data") }
        }
        XCTAssertEqual(trees[0], trees[1])
        XCTAssertEqual(trees[1], trees[2])
        // Nothing lost: every edit is somewhere in the converged folder, the losers as conflict copies.
        XCTAssertTrue(contents(d[0]).isSuperset(of: everything), "lost an edit: \(contents(d[0])); trash: "
            + "\((try? FileManager.default.subpathsOfDirectory(atPath: d[0].root + "/data/.syncd/trash")) ?? [])")
        XCTAssertGreaterThanOrEqual(trees[0].keys.filter { $0.contains(".sync-conflict-") }.count, 2)
        XCTAssertTrue(trees[0].keys.allSatisfy { $0.components(separatedBy: ".sync-conflict-").count <= 2 }, "no copies of copies")
    }

    func test_readOnlyPeer_editIsNotPropagated_andWrongSecretGetsNothing() throws {
        let stranger = FolderSecretText.generate()
        let (d, _) = try cluster(3, name: "ro") { rw in [nil, try? DaemonHarness.readOnly(rw), stranger] }
        try Data("from the writer".utf8).write(to: URL(fileURLWithPath: d[0].root + "/data/a.txt"))
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !FileManager.default.fileExists(atPath: d[1].root + "/data/a.txt") { usleep(100_000) }
        XCTAssertEqual(try String(contentsOfFile: d[1].root + "/data/a.txt", encoding: .utf8), "from the writer")
        // The read-only peer edits: nobody else ever sees it.
        try Data("read-only edit".utf8).write(to: URL(fileURLWithPath: d[1].root + "/data/a.txt"))
        try Data("new".utf8).write(to: URL(fileURLWithPath: d[1].root + "/data/ro-only.txt"))
        sleep(2)
        XCTAssertEqual(try String(contentsOfFile: d[0].root + "/data/a.txt", encoding: .utf8), "from the writer")
        XCTAssertFalse(FileManager.default.fileExists(atPath: d[0].root + "/data/ro-only.txt"))
        // The peer with another secret received nothing at all.
        XCTAssertEqual(tree(d[2].root + "/data"), [:])
    }

    /// kill -9 the receiver mid-transfer: no partial file ever appears at the target path, and
    /// after a restart the two converge.
    func test_kill9ReceiverMidTransfer_thenRestart_converges() throws {
        let (d, _) = try cluster(2, name: "kill")
        // Written outside the folder, then renamed in: A only ever sees the complete file.
        let outside = d[0].root + "/big.tmp", big = d[0].root + "/data/big.bin"
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: { FileManager.default.createFile(atPath: outside, contents: nil); return outside }()))
        var x: UInt64 = 1
        for _ in 0..<48 {
            var chunk = [UInt8](repeating: 0, count: 4 << 20)
            for i in stride(from: 0, to: chunk.count, by: 8) { x = x &* 6364136223846793005 &+ 1442695040888963407; chunk[i] = UInt8(truncatingIfNeeded: x >> 56) }
            handle.write(Data(chunk))
        }
        handle.closeFile()
        XCTAssertEqual(rename(outside, big), 0)
        let target = d[1].root + "/data/big.bin", tmp = d[1].root + "/data/.syncd/tmp"
        let deadline = Date().addingTimeInterval(60)
        var sawPartial = false
        while Date() < deadline {
            if let files = try? FileManager.default.subpathsOfDirectory(atPath: tmp), files.contains(where: { $0.contains("pull-") }) {
                sawPartial = true
                break
            }
            usleep(2_000)
        }
        d[1].stopDaemon(signal: SIGKILL)
        XCTAssertTrue(sawPartial, "the transfer was caught mid-way")
        XCTAssertFalse(FileManager.default.fileExists(atPath: target), "no partial file at the target path")
        try d[1].startDaemon(extra: ["--join", try XCTUnwrap(d[0].status().listen)])
        try waitInSync(d[0], timeout: 60)
        XCTAssertEqual(FileManager.default.contents(atPath: target), FileManager.default.contents(atPath: big))
        let left = ((try? FileManager.default.subpathsOfDirectory(atPath: tmp)) ?? []).filter { $0.contains("pull-") }
        XCTAssertEqual(left, [], "the restart threw the partial staged file away")
    }
}

extension ReplicationIntegrationTests {
    /// Writer A feeds storage peer S, then goes down; B, a new read-write peer, gets A's files from
    /// S alone — and S can read none of them.
    func test_relayThroughStoragePeer_whileTheWriterIsDown() throws {
        let a = try DaemonHarness(name: "relayA"), s = try DaemonHarness(name: "relayS"), b = try DaemonHarness(name: "relayB")
        try a.startDaemon()
        let seed = try XCTUnwrap(a.status().listen)
        try s.startDaemon(extra: ["--join", seed])
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let rw = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        let storage = s.cliSync(["secret", "--storage", rw])
        XCTAssertEqual(try s.cli(["add", s.root + "/vault", "--secret", storage]).status, 0)
        // 12 MiB: its chunk list (~190 chunks) travels as pieces, which S must keep and serve too.
        let content = noise(12 << 20, seed: 11)
        try FileManager.default.createDirectory(atPath: a.root + "/data/reports", withIntermediateDirectories: true)
        try content.write(to: URL(fileURLWithPath: a.root + "/data/reports/q3-confidential.bin"))
        try Data("meeting notes".utf8).write(to: URL(fileURLWithPath: a.root + "/data/notes.txt"))
        try waitInSync(a)   // S acknowledged everything (chunks travel before their manifest)
        a.stopDaemon(signal: SIGKILL)

        let sAddress = try XCTUnwrap(s.status().listen)
        try b.startDaemon(extra: ["--join", sAddress])
        XCTAssertEqual(try b.cli(["add", b.root + "/data", "--secret", rw]).status, 0)
        let deadline = Date().addingTimeInterval(30)
        let target = b.root + "/data/reports/q3-confidential.bin"
        while Date() < deadline && FileManager.default.contents(atPath: target) != content { usleep(100_000) }
        XCTAssertEqual(FileManager.default.contents(atPath: target), content, "B got A's file from S\n\(b.daemonLog.suffix(3000))")
        XCTAssertEqual(try String(contentsOfFile: b.root + "/data/notes.txt", encoding: .utf8), "meeting notes")
        // S's folder holds sealed data only.
        let names = try FileManager.default.subpathsOfDirectory(atPath: s.root + "/vault")
        XCTAssertFalse(names.contains { $0.contains("q3-confidential") || $0.contains("notes") }, "\(names)")
    }
}

extension ReplicationIntegrationTests {
    /// A wiped folder (its `.syncd/` marker gone too, as with an unmounted volume) pauses with an
    /// error instead of deleting everything on every peer.
    func test_emptiedFolderRoot_pausesInsteadOfDeletingEverywhere() throws {
        let (d, _) = try cluster(2, name: "wipe")
        for i in 0..<20 { try Data("file \(i)".utf8).write(to: URL(fileURLWithPath: d[0].root + "/data/f\(i).txt")) }
        try waitInSync(d[0])
        XCTAssertEqual(tree(d[1].root + "/data").count, 20)
        for name in try FileManager.default.contentsOfDirectory(atPath: d[0].root + "/data") {
            try FileManager.default.removeItem(atPath: d[0].root + "/data/" + name)
        }
        let deadline = Date().addingTimeInterval(10)
        var state = ""
        while Date() < deadline && state != "error" {
            usleep(100_000)
            state = try d[0].status().folders.first?.state ?? ""
        }
        XCTAssertEqual(state, "error", "the wiped folder is paused")
        sleep(1)
        XCTAssertEqual(tree(d[1].root + "/data").count, 20, "the peer lost nothing")
        XCTAssertTrue(try d[0].cli(["status"]).stdout.contains(".syncd is missing"))
    }
}

extension ReplicationIntegrationTests {
    struct Counters: Decodable {
        struct Folder: Decodable { var bytesOut: Int64?; var bytesIn: Int64? }
        var folders: [Folder]
    }

    /// The first folder's traffic counters from `status --json`.
    func traffic(_ h: DaemonHarness) throws -> (bytesIn: Int64, bytesOut: Int64) {
        let f = try JSONDecoder().decode(Counters.self, from: Data(h.cli(["status", "--json"]).stdout.utf8)).folders.first
        return (f?.bytesIn ?? 0, f?.bytesOut ?? 0)
    }

    /// Writes `content` outside `h`'s folder, then renames it in as `name`: the daemon only ever
    /// sees the complete file.
    func drop(_ content: Data, as name: String, into h: DaemonHarness, file: StaticString = #filePath, line: UInt = #line) throws {
        try content.write(to: URL(fileURLWithPath: h.root + "/big.tmp"))
        XCTAssertEqual(rename(h.root + "/big.tmp", h.root + "/data/" + name), 0, file: file, line: line)
    }

    /// `bytes` of pseudo-random data (an LCG), so no two chunks are alike.
    func noise(_ bytes: Int, seed: UInt64) -> Data {
        var x = seed
        return Data((0..<bytes).map { _ in x = x &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: x >> 56) })
    }

    /// A newcomer pulls from every peer that has the data, not only from the one that told it.
    func test_pull_spreadsAcrossPeers() throws {
        let (d, secret) = try cluster(2, name: "spread")
        let content = noise(24 << 20, seed: 7)
        try drop(content, as: "big.bin", into: d[0])
        try waitInSync(d[0])
        func sent(_ h: DaemonHarness) throws -> Int64 { try traffic(h).bytesOut }
        let before = try d.map(sent)
        let c = try DaemonHarness(name: "spread2")
        try c.startDaemon(extra: ["--join", try XCTUnwrap(d[0].status().listen)])
        XCTAssertEqual(try c.cli(["add", c.root + "/data", "--secret", secret]).status, 0)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && FileManager.default.contents(atPath: c.root + "/data/big.bin") != content { usleep(100_000) }
        XCTAssertEqual(FileManager.default.contents(atPath: c.root + "/data/big.bin"), content)
        let served = try zip(d.map(sent), before).map { $0 - $1 }
        XCTAssertTrue(served.allSatisfy { $0 > 2 << 20 }, "both peers served chunks: \(served)")
    }
}

extension ReplicationIntegrationTests {
    /// Renaming a 32 MiB file costs B neither chunks (the old name is hard-linked to the new) nor
    /// its chunk list (named by pieces B already holds): a few hundred bytes of manifest, not 18 KB
    /// of list.
    func test_renameOfABigFile_transfersNoChunksAndNoChunkList() throws {
        let (d, _) = try cluster(2, name: "ren")
        let content = noise(32 << 20, seed: 5)
        try drop(content, as: "db.bin", into: d[0])
        try waitInSync(d[0])
        func received(_ h: DaemonHarness) throws -> Int64 { try traffic(h).bytesIn }
        let before = try received(d[1])
        XCTAssertGreaterThan(before, 32 << 20, "B pulled the file")
        XCTAssertEqual(rename(d[0].root + "/data/db.bin", d[0].root + "/data/db-renamed.bin"), 0)
        try waitInSync(d[0])
        XCTAssertEqual(FileManager.default.contents(atPath: d[1].root + "/data/db-renamed.bin"), content)
        XCTAssertFalse(FileManager.default.fileExists(atPath: d[1].root + "/data/db.bin"))
        let cost = try received(d[1]) - before
        XCTAssertLessThan(cost, 4096, "the rename cost \(cost) bytes")
        // B renamed its file too (staged as a hard link): nothing went to the trash.
        let trash = (try? FileManager.default.subpathsOfDirectory(atPath: d[1].root + "/data/.syncd/trash")) ?? []
        XCTAssertFalse(trash.contains { $0.hasSuffix("db.bin") }, "a rename is not a deletion: \(trash)")
        sleep(1)   // let B's scanner look at what the apply placed: nothing may look like a local edit
        XCTAssertEqual(Array(tree(d[1].root + "/data").keys), ["db-renamed.bin"], "no conflict copy, nothing else")
        XCTAssertEqual(tree(d[0].root + "/data"), tree(d[1].root + "/data"))
    }

    /// B's folder lives on a 4 MiB tmpfs; A shares 10 MiB. B pauses with "disk full", loses and
    /// corrupts nothing, and resumes by itself once the file system grows.
    func test_fullDisk_pausesAndResumesWhenSpaceReturns() throws {
        let a = try DaemonHarness(name: "fullA"), b = try DaemonHarness(name: "fullB")
        let mountpoint = b.root + "/data"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=4M", "tmpfs", mountpoint]
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a tmpfs here (not root?)") }
        addTeardownBlock {
            b.stopDaemon(signal: SIGKILL)
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [mountpoint]
            try? umount.run()
            umount.waitUntilExit()
        }
        try a.startDaemon()
        try b.startDaemon(extra: ["--join", try XCTUnwrap(a.status().listen)])
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        XCTAssertEqual(try b.cli(["add", mountpoint, "--secret", secret]).status, 0)
        let content = noise(10 << 20, seed: 3)
        try drop(content, as: "big.bin", into: a)
        var deadline = Date().addingTimeInterval(20)
        var status = ""
        while Date() < deadline && !status.contains("disk full") {
            usleep(200_000)
            status = try b.cli(["status"]).stdout
        }
        XCTAssertTrue(status.contains("disk full"), "B paused with a clear error: \(status)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mountpoint + "/big.bin"), "no partial file")
        let remount = Process()
        remount.executableURL = URL(fileURLWithPath: "/bin/mount")
        remount.arguments = ["-o", "remount,size=64M", mountpoint]
        try remount.run()
        remount.waitUntilExit()
        deadline = Date().addingTimeInterval(30)
        while Date() < deadline && FileManager.default.contents(atPath: mountpoint + "/big.bin") != content { usleep(200_000) }
        XCTAssertEqual(FileManager.default.contents(atPath: mountpoint + "/big.bin"), content, "resumed once space returned")
    }
}

enum FolderSecretText {
    static func generate() -> String {
        let h = try! DaemonHarness(name: "secretgen")
        return h.cliSync(["secret"])
    }
}

extension DaemonHarness {
    func cliSync(_ args: [String]) -> String {
        ((try? cli(args))?.stdout ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func readOnly(_ rw: String) throws -> String {
        let h = try DaemonHarness(name: "ro-derive")
        return h.cliSync(["secret", "--read-only", rw])
    }
}

extension ReplicationIntegrationTests {
    /// `ln orig twin`, then an append through `orig`: inotify names only `orig`, yet the peer must
    /// get the new content under both names before `wait` says in sync (not at the hourly rescan).
    func test_appendThroughOneHardLink_reachesThePeerUnderEveryName() throws {
        let (d, _) = try cluster(2, name: "hardlink")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try Data("v1\n".utf8).write(to: URL(fileURLWithPath: a + "/orig"))
        try FileManager.default.createDirectory(atPath: a + "/other", withIntermediateDirectories: true)
        XCTAssertEqual(link(a + "/orig", a + "/other/twin"), 0)
        try waitInSync(d[0])
        XCTAssertEqual(try String(contentsOfFile: b + "/other/twin", encoding: .utf8), "v1\n")

        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: a + "/orig"))
        handle.seekToEndOfFile()
        handle.write(Data("v2\n".utf8))
        handle.closeFile()
        try waitInSync(d[0])
        XCTAssertEqual(try String(contentsOfFile: b + "/orig", encoding: .utf8), "v1\nv2\n")
        XCTAssertEqual(try String(contentsOfFile: b + "/other/twin", encoding: .utf8), "v1\nv2\n", "the other name is not stale")
        XCTAssertEqual(tree(b), tree(a))
    }
}
