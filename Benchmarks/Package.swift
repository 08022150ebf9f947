// swift-tools-version:6.1
import PackageDescription

// Benchmarks live in their own package so the main build and CI stay lean.
// Run: swift run -c release --package-path Benchmarks syncd-bench all
let package = Package(
    name: "syncd-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "syncd", path: "../"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .executableTarget(
            name: "syncd-bench",
            dependencies: [
                .product(name: "SyncCore", package: "syncd"),
                .product(name: "SyncSecurity", package: "syncd"),
                .product(name: "SyncFS", package: "syncd"),
                .product(name: "SyncWire", package: "syncd"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked", "-wmo"])]
        ),
    ]
)
