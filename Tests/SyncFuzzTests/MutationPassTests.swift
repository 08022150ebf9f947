import SyncFuzz
import XCTest

/// The short seeded-mutation pass CI runs: 100,000 inputs per decoder. A crash fails the run;
/// the seed makes any failure reproducible with `syncd-fuzz mutate TARGET 100000 SEED`.
final class MutationPassTests: XCTestCase {
    static let count = 100_000
    static let seed: UInt64 = 20261122

    func test_everyDecoder_survives100kMutatedInputs() {
        for target in FuzzTargets.all {
            Mutator.run(target, count: Self.count, seed: Self.seed)
        }
    }

    func test_mutator_isDeterministic() {
        var a = Mutator(seed: 7), b = Mutator(seed: 7)
        let base: [UInt8] = Array(0..<32)
        for _ in 0..<100 { XCTAssertEqual(a.mutate(base), b.mutate(base)) }
    }
}
