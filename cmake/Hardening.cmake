# The distribution hardening flags (what dpkg-buildflags hardening=+all and Fedora's
# redhat-hardened-cc1 add), for every build: lintian's hardening-no-* tags check the result.
# -fstack-protector-strong and _FORTIFY_SOURCE=2 (Rel builds) are set in CMakeLists.txt.
include(CheckCCompilerFlag)
include(CheckPIESupported)

# CMAKE_POSITION_INDEPENDENT_CODE gives -fPIE; -pie at link time needs this check (CMP0083).
check_pie_supported(OUTPUT_VARIABLE jitd_pie_output LANGUAGES C)
if(NOT CMAKE_C_LINK_PIE_SUPPORTED)
	message(WARNING "jitd: the linker cannot make PIE executables: ${jitd_pie_output}")
endif()

# Full RELRO: the GOT is read-only after start-up (bind-now resolves every symbol first).
add_link_options(-Wl,-z,relro -Wl,-z,now)

foreach(flag -fstack-clash-protection -fcf-protection)
	string(MAKE_C_IDENTIFIER "JITD_HAVE${flag}" var)
	check_c_compiler_flag(${flag} ${var})
	if(${var})
		add_compile_options(${flag})
	endif()
endforeach()
