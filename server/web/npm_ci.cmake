# cka_npm_ci(<stamp variable> <package dir> <comment>): installs the npm packages that
# <package dir>/package-lock.json pins into <current binary dir>/npm/node_modules, at build
# time, and again only when package.json or the lock changes; sets <stamp variable> to the
# file that build step writes, for other steps to depend on. --ignore-scripts: no package this
# project uses needs its install script (esbuild's binary comes as a package of its own).
function(cka_npm_ci stamp_var package_dir comment)
  find_program(CKA_NPM npm)
  if(NOT CKA_NPM)
    message(FATAL_ERROR "${package_dir}: npm is needed; bash deploy/install_deps.sh installs it")
  endif()
  set(npm_dir ${CMAKE_CURRENT_BINARY_DIR}/npm)
  file(MAKE_DIRECTORY ${npm_dir})
  add_custom_command(
    OUTPUT ${npm_dir}/npm-ci.stamp
    COMMAND ${CMAKE_COMMAND} -E copy_if_different
            ${package_dir}/package.json ${package_dir}/package-lock.json ${npm_dir}
    COMMAND ${CKA_NPM} ci --ignore-scripts --no-audit --no-fund --loglevel=error
    COMMAND ${CMAKE_COMMAND} -E touch ${npm_dir}/npm-ci.stamp
    WORKING_DIRECTORY ${npm_dir}
    DEPENDS ${package_dir}/package.json ${package_dir}/package-lock.json
    COMMENT "npm ci: ${comment}"
    VERBATIM)
  set(${stamp_var} ${npm_dir}/npm-ci.stamp PARENT_SCOPE)
endfunction()
