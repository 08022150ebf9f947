import Foundation
import SyncCore
@testable import SyncFS
import XCTest

/// `POSIXFileSystem` is the boundary: no operation through it reaches outside the folder or
/// follows a symlink, whatever the folder holds (Docs/security.md).
final class ConfinementTests: XCTestCase {
    private var base = ""
    private var root = ""
    private var outside = ""
    private var fs: POSIXFileSystem!

    override func setUpWithError() throws {
        base = NSTemporaryDirectory() + "syncd-confine-\(UUID().uuidString.prefix(8))"
        root = base + "/folder"
        outside = base + "/outside"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/sub/deeper", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: outside + "/dir", withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: outside + "/x"))
        try Data("inside".utf8).write(to: URL(fileURLWithPath: root + "/sub/x"))
        // Every way a component can lead elsewhere: relative and absolute links out, a link to a
        // directory inside, a link up and back in, a dangling link, a file where a directory should be.
        try fm.createSymbolicLink(atPath: root + "/out", withDestinationPath: "../outside")
        try fm.createSymbolicLink(atPath: root + "/abs", withDestinationPath: outside)
        try fm.createSymbolicLink(atPath: root + "/inner", withDestinationPath: "sub")
        try fm.createSymbolicLink(atPath: root + "/sub/up", withDestinationPath: "../..")
        try fm.createSymbolicLink(atPath: root + "/dangling", withDestinationPath: "nowhere/at/all")
        try Data("f".utf8).write(to: URL(fileURLWithPath: root + "/plain"))
        fs = POSIXFileSystem(root: root)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Kind, mode, size, mtime and content of everything under `dir`, symlinks not followed.
    private func snapshot(_ dir: String) -> [String: String] {
        var out: [String: String] = [:]
        let fm = FileManager.default
        for rel in (try? fm.subpathsOfDirectory(atPath: dir)) ?? [] {
            var st = stat()
            guard lstat(dir + "/" + rel, &st) == 0 else { continue }
            let content = (st.st_mode & S_IFMT) == S_IFREG ? (fm.contents(atPath: dir + "/" + rel)?.base64EncodedString() ?? "?") : ""
            out[rel] = "\(st.st_mode) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(content)"
        }
        return out
    }

    private func assertRefused(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), what, file: file, line: line) { error in
            let code = (error as? FileSystemError)?.errno
            XCTAssertTrue(code == ENOTDIR || code == EINVAL, "\(what): \(error)", file: file, line: line)
        }
    }

    func test_everyOperation_refusesAPathWhoseParentIsASymlinkOrAFile() throws {
        let before = snapshot(outside), inside = snapshot(root + "/sub")
        for dir in ["out", "abs", "inner", "sub/up", "dangling", "plain", "sub/up/folder/sub"] {
            let p = dir + "/x", q = dir + "/new"
            assertRefused("mkdir \(q)") { try fs.makeDirectory(q, mode: 0o755) }
            assertRefused("create \(q)") { _ = try fs.createFile(q, mode: 0o644) }
            assertRefused("rename from \(p)") { try fs.rename(p, to: "stolen", replacing: true) }
            assertRefused("rename onto \(p)") { try fs.rename("plain", to: p, replacing: true) }
            assertRefused("link from \(p)") { try fs.link(p, to: "stolen") }
            assertRefused("link onto \(q)") { try fs.link("plain", to: q) }
            assertRefused("remove \(p)") { try fs.remove(p) }
            assertRefused("chmod \(p)") { try fs.setMode(p, 0o777) }
            assertRefused("utimes \(p)") { try fs.setModificationTime(p, 0) }
            assertRefused("symlink \(q)") { try fs.makeSymlink(q, target: "x") }
            assertRefused("fsync \(p)") { try fs.synchronize(p) }
            assertRefused("open \(p)") { _ = try fs.openForReading(p) }
            assertRefused("list \(dir)/dir") { _ = try fs.list(dir + "/dir") }
            XCTAssertNil(try fs.metadata(p), "lstat through \(dir)")
            XCTAssertNil(fs.read(p, offset: 0, count: 6), "read through \(dir)")
        }
        for bad in ["../outside/x", "sub/../../outside/x", "./sub/x", "sub//x", "/etc/passwd", ""] {
            assertRefused("malformed \(bad)") { try fs.setMode(bad, 0o777) }
        }
        XCTAssertEqual(snapshot(outside), before, "nothing outside the folder changed")
        XCTAssertEqual(snapshot(root + "/sub"), inside, "nothing reached through the in-folder link changed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/stolen"))
    }

    func test_aFinalSymlink_isActedOnItself_neverFollowed() throws {
        let before = snapshot(outside)
        XCTAssertEqual(try fs.metadata("out")?.kind, .symlink)
        XCTAssertEqual(try fs.metadata("out")?.symlinkTarget, "../outside")
        XCTAssertThrowsError(try fs.setMode("abs", 0o700), "chmod never follows a final symlink")
        XCTAssertThrowsError(try fs.openForReading("abs"))
        XCTAssertThrowsError(try fs.createFile("abs", mode: 0o644)) { XCTAssertEqual(($0 as? FileSystemError)?.errno, EEXIST) }
        try fs.setModificationTime("abs", 1_000_000_000)          // the link's own time
        try fs.rename("plain", to: "out", replacing: true)        // replaces the link, not its target
        XCTAssertEqual(try fs.metadata("out")?.kind, .file)
        try fs.remove("abs")
        XCTAssertNil(try fs.metadata("abs"))
        try fs.removeTree("sub")                                   // holds `up -> ../..`: removed, not followed
        XCTAssertNil(try fs.metadata("sub"))
        XCTAssertEqual(snapshot(outside), before)
    }

    /// Random trees of links (out, in, up, dangling) and random operations on random paths made
    /// of the names present: whatever happens inside, the outside never changes.
    func test_randomOperations_neverChangeAnythingOutside() throws {
        for seed in UInt64(1)...40 {
            try? FileManager.default.removeItem(atPath: root)
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            let before = snapshot(outside)
            var rng = SplitMix(seed: seed)
            let targets = ["../outside", outside, "..", "../..", "a", "a/b", "nowhere", "/", "../outside/dir", "."]
            var names = ["a", "b", "c", "a/b", "a/b/c", "b/a", "c/c"]
            func anyPath() -> String { names[Int(rng.next() % UInt64(names.count))] + (rng.next() % 3 == 0 ? "/x" : "") }
            for _ in 0..<300 {
                let p = anyPath(), q = anyPath()
                switch rng.next() % 11 {
                case 0: try? fs.makeDirectory(p, mode: 0o755)
                case 1: if let f = try? fs.createFile(p, mode: 0o644) { try? [UInt8]("data".utf8).withUnsafeBytes { try f.write($0, at: 0) }; f.close() }
                case 2: try? fs.makeSymlink(p, target: targets[Int(rng.next() % UInt64(targets.count))])
                case 3: try? fs.rename(p, to: q, replacing: rng.next() % 2 == 0)
                case 4: try? fs.link(p, to: q)
                case 5: try? fs.remove(p)
                case 6: try? fs.setMode(p, 0o777)
                case 7: try? fs.setModificationTime(p, 42)
                case 8: try? fs.removeTree(p)
                case 9: _ = fs.read(p, offset: 0, count: 4)
                default: try? fs.synchronize(p)
                }
                if rng.next() % 5 == 0 { names.append(q + "/" + ["a", "b", "x"][Int(rng.next() % 3)]) }
            }
            XCTAssertEqual(snapshot(outside), before, "seed \(seed) changed something outside the folder")
            XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/x"), "seed \(seed) wrote beside the folder")
            XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: base)), ["folder", "outside"], "seed \(seed)")
        }
    }

    /// A file swapped for a FIFO (or a socket) is refused at once, never a blocked open; and the
    /// folder root itself can never be removed through the tree removal.
    func test_aFIFOIsRefusedWithoutBlocking_andTheRootIsNeverRemoved() throws {
        XCTAssertEqual(mkfifo(root + "/pipe", 0o644), 0)
        XCTAssertThrowsError(try fs.openForReading("pipe"))
        XCTAssertNil(fs.read("pipe", offset: 0, count: 1))
        XCTAssertThrowsError(try fs.removeTree(""))
        XCTAssertEqual(try fs.metadata("plain")?.kind, .file)
    }

    func test_timesBefore1970_withAFraction_roundTrip() throws {
        let f = try fs.createFile("old", mode: 0o644)
        try f.setModificationTime(-500_000_000)   // 1969-12-31 23:59:59.5 UTC
        f.close()
        XCTAssertEqual(try fs.metadata("old")?.mtimeNs, -500_000_000)
        try fs.setModificationTime("old", -1_250_000_001)
        XCTAssertEqual(try fs.metadata("old")?.mtimeNs, -1_250_000_001)
        let t = POSIXFileSystem.timeSpec(-1)
        XCTAssertEqual(t.tv_sec, -1)
        XCTAssertEqual(t.tv_nsec, 999_999_999)
    }

    func test_namesAreBytes_listedAndCreatedAsPathText() throws {
        let latin1 = "caf%E9", nfc = "caf%C3%A9", nfd = "cafe%CC%81", percent = "100%25"
        for name in [latin1, nfc, nfd, percent] {
            let f = try fs.createFile(name, mode: 0o644)
            f.close()
        }
        let listed = Set(try fs.list(""))
        XCTAssertTrue(listed.isSuperset(of: [latin1, nfc, nfd, percent]), "\(listed)")
        // The kernel holds exactly those bytes.
        var raw: [[UInt8]] = []
        let dir = opendir(root)!
        while let ent = readdir(dir) {
            raw.append(withUnsafeBytes(of: ent.pointee.d_name) { Array($0.prefix { $0 != 0 }) })
        }
        closedir(dir)
        XCTAssertTrue(raw.contains([0x63, 0x61, 0x66, 0xE9]))
        XCTAssertTrue(raw.contains([0x63, 0x61, 0x66, 0x65, 0xCC, 0x81]))
        XCTAssertTrue(raw.contains(Array("100%".utf8)))
        try fs.makeSymlink("link", target: latin1)
        XCTAssertEqual(try fs.metadata("link")?.symlinkTarget, latin1)
    }
}

/// A small deterministic generator (SplitMix64) so a failing seed replays.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
