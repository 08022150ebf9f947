// Two ways to fuzz the decoders (Docs/Fuzzing.md):
//   syncd-fuzz mutate [TARGET|all] [COUNT] [SEED]  — the seeded-mutation pass, no special flags
//   libFuzzer: build with -sanitize=fuzzer -DSYNCD_LIBFUZZER, run with SYNCD_FUZZ_TARGET=NAME
import SyncFuzz
#if canImport(Glibc)
import Glibc
#endif

#if SYNCD_LIBFUZZER
let target = FuzzTargets.named(getenv("SYNCD_FUZZ_TARGET").map { String(cString: $0) } ?? "frames")!

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

// SwiftPM links an executable's entry point under this name; libFuzzer's driver takes over from it.
@_cdecl("syncd_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { data, size in
        target.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }
}
#else
@main
struct FuzzMain {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        guard args.first == "mutate" else {
            print("usage: syncd-fuzz mutate [TARGET|all] [COUNT] [SEED]\ntargets: \(FuzzTargets.all.map(\.name).joined(separator: " "))")
            exit(2)
        }
        let names = args.count > 1 && args[1] != "all" ? [args[1]] : FuzzTargets.all.map(\.name)
        let count = args.count > 2 ? Int(args[2]) ?? 100_000 : 100_000
        let seed = args.count > 3 ? UInt64(args[3]) ?? 1 : 1
        for name in names {
            guard let t = FuzzTargets.named(name) else { print("unknown target \(name)"); exit(2) }
            Mutator.run(t, count: count, seed: seed)
            print("fuzz \(name): \(count) inputs, seed \(seed), no crash")
        }
    }
}
#endif
