import SyncCore
@testable import SyncReplication
import XCTest

final class ConflictCopyNameTests: XCTestCase {
    private let second: Int64 = 1_000_000_000

    private func loser(mtime seconds: Int64, by device: ShortDeviceID) -> FileEntry {
        FileEntry(path: "ignored", metadata: FileMetadata(kind: .file, size: 1, mode: 0o644, mtimeNs: seconds * second,
                                                          ctimeNs: 0, inode: 0),
                  version: VersionVector([.init(device: device, value: 3)]))
    }

    func test_timestamp_shouldMatchKnownDates() {
        XCTAssertEqual(UTCTimestamp.compact(0), "19700101-000000")
        XCTAssertEqual(UTCTimestamp.compact(1_700_000_000 * second), "20231114-221320")
        XCTAssertEqual(UTCTimestamp.compact(1_709_210_096 * second), "20240229-123456")      // leap day
        XCTAssertEqual(UTCTimestamp.compact(951_782_400 * second), "20000229-000000")        // 400-year leap day
        XCTAssertEqual(UTCTimestamp.compact(4_102_444_800 * second), "21000101-000000")      // 2100 is no leap year
        XCTAssertEqual(UTCTimestamp.compact(1_704_067_199 * second), "20231231-235959")
        XCTAssertEqual(UTCTimestamp.compact(.max), "22620411-234716")                       // the end of Int64 ns
    }

    func test_timestamp_shouldRoundDownSubSecondsAndPre1970Times() {
        XCTAssertEqual(UTCTimestamp.compact(1_700_000_000 * second + 999_999_999), "20231114-221320")
        XCTAssertEqual(UTCTimestamp.compact(-1), "19691231-235959")
        XCTAssertEqual(UTCTimestamp.compact(-second), "19691231-235959")
        XCTAssertEqual(UTCTimestamp.compact(-86_400 * second), "19691231-000000")
        XCTAssertEqual(UTCTimestamp.compact(-2_208_988_800 * second), "19000101-000000")
        XCTAssertEqual(UTCTimestamp.compact(.min), "16770921-001243")
    }

    func test_timestamp_shouldAgreeWithDayCounting_fromEpochTo2243() {
        // Walk day by day from 1970 to 2243 (Int64 nanoseconds end in 2262) counting the calendar by hand.
        var (year, month, day): (Int64, Int64, Int64) = (1970, 1, 1)
        func length(_ m: Int64, _ y: Int64) -> Int64 {
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
            return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][Int(m - 1)]
        }
        for days in Int64(0)..<100_000 {
            let civil = UTCTimestamp.civil(days * 86_400 * second + 3_723 * second)
            XCTAssertEqual(civil, .init(year: year, month: month, day: day, hour: 1, minute: 2, second: 3))
            day += 1
            if day > length(month, year) { day = 1; month += 1 }
            if month > 12 { month = 1; year += 1 }
        }
    }

    func test_make_shouldKeepTheLastExtensionBeforeAndAfterTheMarker() {
        let l = loser(mtime: 1_700_000_000, by: 0x0123_4567_89AB_CDEF)
        XCTAssertEqual(ConflictCopyName.make(for: "docs/notes.txt", loser: l),
                       "docs/notes.sync-conflict-20231114-221320-AERUKZ4.txt")
        XCTAssertEqual(ConflictCopyName.make(for: "a.tar.gz", loser: l),
                       "a.tar.sync-conflict-20231114-221320-AERUKZ4.gz")
        XCTAssertEqual(ConflictCopyName.make(for: "dir.d/Makefile", loser: l),
                       "dir.d/Makefile.sync-conflict-20231114-221320-AERUKZ4")
    }

    func test_make_shouldGiveDotfilesNoExtension() {
        let l = loser(mtime: 0, by: 0)
        XCTAssertEqual(ConflictCopyName.make(for: ".bashrc", loser: l), ".bashrc.sync-conflict-19700101-000000-AAAAAAA")
        XCTAssertEqual(ConflictCopyName.make(for: "home/.config.json", loser: l),
                       "home/.config.sync-conflict-19700101-000000-AAAAAAA.json")
    }

    func test_make_againstTheWinner_namesTheDeviceThatDiverged() {
        // Three devices edit {A:1} at once: B's and C's losing versions name B and C, though A
        // (whose id is largest) holds a counter as high as theirs.
        let a: ShortDeviceID = 0xF000_0000_0000_0000, b: ShortDeviceID = 0x1000_0000_0000_0000, c: ShortDeviceID = 0x2000_0000_0000_0000
        var fromB = loser(mtime: 0, by: b), fromC = loser(mtime: 0, by: c)
        fromB.version = VersionVector([.init(device: a, value: 1), .init(device: b, value: 1)])
        fromC.version = VersionVector([.init(device: a, value: 1), .init(device: c, value: 1)])
        let winner = VersionVector([.init(device: a, value: 2)])
        XCTAssertEqual(ConflictCopyName.author(of: fromB.version, against: winner), b)
        XCTAssertEqual(ConflictCopyName.author(of: fromC.version, against: winner), c)
        XCTAssertNotEqual(ConflictCopyName.make(for: "f", loser: fromB, winner: winner),
                          ConflictCopyName.make(for: "f", loser: fromC, winner: winner))
        XCTAssertEqual(ConflictCopyName.modifier(of: fromB.version), a, "the highest counter alone would name A")
        XCTAssertEqual(ConflictCopyName.author(of: fromB.version, against: fromB.version), a, "nothing above: the modifier")
    }

    func test_make_shouldNameTheDeviceWithTheHighestCounter() {
        var l = loser(mtime: 0, by: 0xFFFF_FFFF_FFFF_FFFF)
        l.version = VersionVector([.init(device: 0xFFFF_FFFF_FFFF_FFFF, value: 3),
                                   .init(device: 0xA1B2_C3D4_E5F6_0718, value: 9)])
        XCTAssertEqual(ConflictCopyName.make(for: "f", loser: l), "f.sync-conflict-19700101-000000-UGZMHVH")
    }

    func test_make_shouldTrimTheStemToFitOneComponent() {
        let long = RelativePath.text(fromUnicode: String(repeating: "é", count: 200)) + ".txt"   // 404 bytes
        let name = ConflictCopyName.make(for: "d/" + long, loser: loser(mtime: 0, by: 0))!
        let base = String(name.split(separator: "/").last!)
        let bytes = RelativePath.bytes(base)!
        XCTAssertLessThanOrEqual(bytes.count, 255, "the name's bytes, not its (longer) text")
        XCTAssertGreaterThan(bytes.count, 250)
        XCTAssertTrue(base.hasSuffix(".sync-conflict-19700101-000000-AAAAAAA.txt"))
        XCTAssertFalse(RelativePath.display(base).contains("\u{FFFD}"), "no é cut in half")
        XCTAssertNil(RelativePath.validate(name))
        // A name that is not UTF-8 (Latin-1) is trimmed a byte at a time.
        let latin1 = ConflictCopyName.make(for: RelativePath.text(fromBytes: [UInt8](repeating: 0xE9, count: 300)) + ".%E9",
                                           loser: loser(mtime: 0, by: 0))!
        XCTAssertEqual(RelativePath.bytes(latin1)?.count, 255)
        XCTAssertTrue(latin1.hasSuffix("AAAAAAA.%E9"))
        let hugeExtension = "x." + String(repeating: "e", count: 240)
        XCTAssertNil(ConflictCopyName.make(for: hugeExtension, loser: loser(mtime: 0, by: 0)))
    }

    func test_original_shouldRecogniseCopiesAndNothingElse() {
        XCTAssertEqual(ConflictCopyName.original(of: "docs/notes.sync-conflict-20231114-221320-AERUKZ4.txt"),
                       "docs/notes.txt")
        XCTAssertEqual(ConflictCopyName.original(of: ".bashrc.sync-conflict-19700101-000000-AAAAAAA"), ".bashrc")
        XCTAssertEqual(ConflictCopyName.original(of: "n.sync-conflict-19700101-000000-AAAAAAA 2.txt"), "n.txt")
        XCTAssertNil(ConflictCopyName.original(of: "notes.txt"))
        XCTAssertNil(ConflictCopyName.original(of: "n.sync-conflict-1970010-000000-AAAAAAA.txt"))
        XCTAssertNil(ConflictCopyName.original(of: "n.sync-conflict-19700101-000000-aaaaaaa.txt"))
        XCTAssertNil(ConflictCopyName.original(of: ".sync-conflict-19700101-000000-AAAAAAA"))
    }
}
