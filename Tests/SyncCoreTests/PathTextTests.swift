import SyncCore
import XCTest

/// Path text (RelativePath): names are bytes, carried in ASCII strings that compare byte for byte.
final class PathTextTests: XCTestCase {
    private let nfc = "caf\u{E9}"           // é as one code point
    private let nfd = "cafe\u{301}"         // e + combining acute

    func test_everyByte_roundTrips_andTextIsASCII() {
        let all = (0...255).map { UInt8($0) }
        let text = RelativePath.text(fromBytes: all)
        XCTAssertTrue(text.utf8.allSatisfy { $0 < 0x80 })
        XCTAssertEqual(RelativePath.bytes(text), all)
        for b in all {
            let one = RelativePath.text(fromBytes: [b])
            XCTAssertEqual(RelativePath.bytes(one), [b], "byte \(b)")
            XCTAssertEqual(one.utf8.count, b < 0x80 && b != 0x25 ? 1 : 3, "byte \(b)")
        }
        XCTAssertEqual(RelativePath.text(fromBytes: [0x25, 0xE9, 0x41]), "%25%E9A")
    }

    func test_canonicallyEquivalentNames_areDistinctTexts() {
        XCTAssertEqual(nfc, nfd, "Swift's String equality is canonical equivalence: the reason for path text")
        let a = RelativePath.text(fromUnicode: nfc), b = RelativePath.text(fromUnicode: nfd)
        XCTAssertEqual(a, "caf%C3%A9")
        XCTAssertEqual(b, "cafe%CC%81")
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(Set([a, b]).count, 2)
        XCTAssertEqual([a: 1, b: 2].count, 2)
        XCTAssertEqual(RelativePath.display(a), nfc)
        XCTAssertEqual(Array(RelativePath.display(b).utf8), Array(nfd.utf8), "display keeps the bytes")
    }

    func test_bytes_rejectsWhatIsNotPathText() {
        for bad in ["caf\u{E9}", "%", "%4", "%G1", "a%zz", "%e9", "%41", "%2f", "%2F"] {
            XCTAssertNil(RelativePath.bytes(bad), bad)
            XCTAssertFalse(RelativePath.isText(bad), bad)
        }
        XCTAssertTrue(RelativePath.isText("plain/ascii name.txt"))
        XCTAssertTrue(RelativePath.isText("%25%E9"))
    }

    func test_display_showsInvalidUTF8AsReplacement() {
        XCTAssertEqual(RelativePath.display("caf%E9"), "caf\u{FFFD}")
    }

    func test_validate_worksOnPathText() {
        XCTAssertNil(RelativePath.validate("dir%E9/caf%C3%A9"))
        XCTAssertNil(RelativePath.validate("100%25"))
        XCTAssertEqual(RelativePath.validate("a\u{0}b"), .nul, "text keeps NUL as itself")
        XCTAssertEqual(RelativePath.validate("caf\u{E9}"), .notText)
        XCTAssertEqual(RelativePath.validate("a%2Fb"), .notText, "a slash can only be itself")
        XCTAssertEqual(RelativePath.validate("%2E%2E/x"), .notText, "'..' can only be spelled plainly")
        XCTAssertEqual(RelativePath.validate("a/%"), .notText)
        XCTAssertEqual(RelativePath.validate(".syncd/x"), .stateDirectory)
        // The 4096-byte limit is on the name's bytes, not on its (up to 3× longer) text.
        let long = RelativePath.text(fromBytes: [UInt8](repeating: 0xE9, count: 4096))
        XCTAssertNil(RelativePath.validate(long))
        XCTAssertEqual(RelativePath.validate(long + "x"), .tooLong)
    }
}
