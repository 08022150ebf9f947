@testable import SyncCore
import XCTest

final class FastCDCTests: XCTestCase {
    let cdc = FastCDC(gear: FastCDC.testGear(seed: 1))

    /// Golden vector: 2 MiB of SplitMix64(seed 42) bytes, gear SplitMix64(seed 1), 16/64/256 KiB.
    /// Any change here changes every chunk id in every folder: bump `FastCDC.version` with it.
    func test_chunkLengths_shouldMatchGoldenVector() {
        let data = pseudoRandomBytes(1 << 21, seed: 42)
        XCTAssertEqual(cdc.chunkLengths(of: data), [
            73074, 43863, 78702, 46784, 158224, 80132, 31370, 83974, 99861, 63566, 78522, 75757, 69629, 72634,
            94368, 77922, 33416, 103645, 72428, 71399, 122590, 50969, 65831, 129107, 70890, 90794, 57701,
        ])
        XCTAssertEqual(FastCDC.version, 1)
    }

    func test_masks_shouldUseLevelTwoNormalization() {
        XCTAssertEqual(cdc.maskS.nonzeroBitCount, 18)   // log2(64 KiB) + 2
        XCTAssertEqual(cdc.maskL.nonzeroBitCount, 14)   // log2(64 KiB) - 2
        XCTAssertEqual(cdc.maskS, 0x5555_5555_5000_0000)
        XCTAssertEqual(cdc.maskL, 0x5555_5550_0000_0000)
        XCTAssertEqual(cdc.maskL & cdc.maskS, cdc.maskL, "the easy mask tests a subset of the hard mask's bits")
    }

    /// The two-bytes-per-step loop must cut exactly where the paper's one-byte loop cuts, for every
    /// parity of chunk start and buffer length, and for small parameters that exercise both masks.
    func test_cut_shouldEqualOneByteReference() {
        let small = FastCDC(gear: FastCDC.testGear(seed: 5),
                            parameters: FastCDC.Parameters(minSize: 64, avgSize: 256, maxSize: 1024))
        for (chunker, size) in [(cdc, 3 << 20), (small, 200_000)] {
            let data = pseudoRandomBytes(size, seed: UInt64(size))
            for start in [0, 1, 2, 7] {
                var at = start
                while at < data.count {
                    let fast = data.withUnsafeBytes { chunker.cut(UnsafeRawBufferPointer(rebasing: $0[at...]), isFinal: true) }
                    let reference = chunker.referenceCut(data[at...])
                    XCTAssertEqual(fast, reference, "at \(at)")
                    if fast != reference { return }
                    at += fast
                }
            }
        }
    }

    func test_chunkLengths_shouldStayWithinBoundsAndNearAverage() {
        let data = pseudoRandomBytes(32 << 20, seed: 9)
        let lengths = cdc.chunkLengths(of: data)
        XCTAssertEqual(lengths.reduce(0, +), data.count)
        XCTAssertTrue(lengths.dropLast().allSatisfy { $0 >= 16 << 10 && $0 <= 256 << 10 })
        // Normalized chunking: the mean lands a little above avgSize (min skip + easy mask tail).
        let mean = data.count / lengths.count
        XCTAssertTrue((64 << 10)...(88 << 10) ~= mean, "mean chunk \(mean)")
    }

    func test_cut_shouldHandleDegenerateInputs() {
        XCTAssertEqual(cdc.chunkLengths(of: []), [])
        XCTAssertEqual(cdc.chunkLengths(of: [1, 2, 3]), [3])
        XCTAssertEqual(cdc.chunkLengths(of: [UInt8](repeating: 0, count: 16 << 10)), [16 << 10])
        // A run of identical bytes never satisfies the masks: it is cut at maxSize.
        let zeros = [UInt8](repeating: 0, count: 600 << 10)
        XCTAssertEqual(cdc.chunkLengths(of: zeros), [256 << 10, 256 << 10, 88 << 10])
    }

    /// Inserting bytes in the middle of a large file changes only the chunks around the edit: the
    /// chunks before it are untouched and the cut points resynchronize within a chunk or two.
    func test_insertInMiddle_shouldChangeOnlyNearbyChunks() {
        let original = pseudoRandomBytes(16 << 20, seed: 77)
        var edited = original
        edited.insert(contentsOf: pseudoRandomBytes(100, seed: 78), at: 8 << 20)
        let before = chunks(original), after = chunks(edited)
        let unchanged = Set(before).intersection(after)
        XCTAssertGreaterThan(before.count, 150)
        XCTAssertLessThanOrEqual(after.count - unchanged.count, 2, "new chunks after a 100-byte insert")
        XCTAssertLessThanOrEqual(before.count - unchanged.count, 2, "old chunks lost to a 100-byte insert")
        // And a deletion of a few bytes behaves the same.
        var shortened = original
        shortened.removeSubrange((4 << 20)..<((4 << 20) + 10))
        XCTAssertLessThanOrEqual(chunks(shortened).count - Set(before).intersection(chunks(shortened)).count, 2)
    }

    private func chunks(_ data: [UInt8]) -> [[UInt8]] {
        var at = 0
        return cdc.chunkLengths(of: data).map { n in defer { at += n }; return Array(data[at..<at + n]) }
    }
}

func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed
    var out = [UInt8]()
    out.reserveCapacity(count)
    while out.count < count {
        x &+= 0x9E37_79B9_7F4A_7C15
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        for k in 0..<8 where out.count < count { out.append(UInt8(truncatingIfNeeded: z >> (8 * UInt64(k)))) }
    }
    return out
}
